/** Types of bin/fast.js, for the tests that import it. */
export declare const BUNDLED: Set<string>
export declare function runBundled(argv: string[]): Promise<boolean>
