import {killLeftovers, printed, secrets} from './cli.js'
import {stopAll} from './redis.js'
import {stopAllS3} from './s3.js'

/** Root hooks: whatever a test started is stopped, even when the test failed half-way. */
export const mochaHooks = {
  afterEach() {
    killLeftovers()
  },
  async afterAll() {
    killLeftovers()
    await stopAll()
    await stopAllS3()
    // No password a test used may appear in anything a command printed, in any test.
    const leaked = [...secrets].filter((s) => printed.some((text) => text.includes(s)))
    if (leaked.length > 0) throw new Error(`a password was printed during the run: ${leaked.map((s) => s.slice(0, 3) + '***').join(', ')}`)
  },
}
