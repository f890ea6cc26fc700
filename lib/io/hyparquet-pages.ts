// hyparquet's page decoder (parquetHeader, readPage), struct/list assembly and default parsers: not
// in its main entry, but exported as `hyparquet/src/*.js`. tap's TypeScript loader (a ts-node fork)
// cannot resolve that subpath pattern, so the files are imported by URL, next to the main entry
// they belong to; the types come from the package's declarations all the same.
import type * as Assemble from 'hyparquet/src/assemble.js'
import type * as Column from 'hyparquet/src/column.js'
import type * as Convert from 'hyparquet/src/convert.js'
import type * as Schema from 'hyparquet/src/schema.js'

const src = (file: string) => new URL(`./${file}`, import.meta.resolve('hyparquet')).href

const [column, convert, assemble, schema] = (await Promise.all([src('column.js'), src('convert.js'), src('assemble.js'), src('schema.js')].map((url) => import(url)))) as [
  typeof Column,
  typeof Convert,
  typeof Assemble,
  typeof Schema,
]

export const { parquetHeader, readPage } = column
export const { convert: convertDictionary, DEFAULT_PARSERS } = convert
export const { assembleNested } = assemble
export const { getTreePath } = schema
