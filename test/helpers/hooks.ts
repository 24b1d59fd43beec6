import {stopAll} from './redis.js'

/** Root hook: whatever a test started is stopped, even when the test failed half-way. */
export const mochaHooks = {
  async afterAll() {
    await stopAll()
  },
}
