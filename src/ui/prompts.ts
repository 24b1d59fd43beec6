// The questions this tool asks, in a module loaded only when one is asked: importing
// @inquirer/prompts costs ~90 ms (STACK.md). Naming just these two also lets the
// start-up bundle (src/fast) carry only them, not every prompt of the package.
export {confirm, password} from '@inquirer/prompts'
