/** The input is not a well-formed RDB: the reader says where (its byte position) and what. */
export class RdbFormatError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'RdbFormatError'
  }
}
