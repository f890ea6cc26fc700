/**
 * Where each tenant's data lives in a data folder (docs/bulk.md, "Ownership and layout"):
 *
 * ```
 * <dataDir>/tenants/<tenantId>/datasets/{name}/{config}/{split}.{ext}   uploads
 * <dataDir>/tenants/<tenantId>/outputs/{name}.git                       output datasets
 * ```
 *
 * A tenant sees its own uploads over the operator's datasets folder (read-only, shared by all), and
 * only its own output datasets (over the operator's `outputs`, read-only, when given). Names stay
 * as users know them: two tenants may each have an `org/reviews` without meeting.
 */
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { InvalidOptionError } from '../../errors.js'
import type { Tenant } from '../tenants.js'
import { InputDatasets } from './input-datasets.js'
import { OutputDatasets, makePrivate } from './output-datasets.js'

const TENANT_ID = /^[0-9a-f]{32}$/
// Roots kept open at once; each is a few strings, rebuilt on demand past this.
const MAX_CACHED = 1024

/** The per-tenant dataset roots of a data folder. */
export class TenantSpaces {
  private readonly inputsCache = new Map<string, InputDatasets>()
  private readonly outputsCache = new Map<string, OutputDatasets>()

  /**
   * @param dataDir the server's data folder.
   * @param operatorDatasets the operator's datasets folder (read-only input of every tenant).
   * @param operatorOutputs output datasets given by the operator (read-only, readable by all), if any.
   */
  constructor(
    readonly dataDir: string,
    readonly operatorDatasets: InputDatasets,
    readonly operatorOutputs?: OutputDatasets,
  ) {}

  /** `<dataDir>/tenants/<tenantId>`. @throws InvalidOptionError for an id that is not 32 hex digits. */
  root(tenant: string): string {
    if (!TENANT_ID.test(tenant)) throw new InvalidOptionError(`Not a tenant id: ${JSON.stringify(tenant)}`)
    return join(this.dataDir, 'tenants', tenant)
  }

  /** A tenant's input datasets: its uploads over the operator's folder. */
  inputs(tenant: string): InputDatasets {
    return cached(this.inputsCache, tenant, () => new InputDatasets(join(this.root(tenant), 'datasets'), { base: this.operatorDatasets }))
  }

  /** A tenant's own output datasets (where its jobs commit). */
  outputs(tenant: string): OutputDatasets {
    return cached(this.outputsCache, tenant, () => new OutputDatasets(join(this.root(tenant), 'outputs')))
  }

  /**
   * Where the dataset a tenant asks for by Hub id lives (docs/bulk.md, "Dataset ids"):
   * - `{tenant name}/{name}`: the tenant's own dataset `name` (what its jobs' `bulk_name` makes);
   *   when it has none of that name, its own or the operator's two-part dataset of exactly that id;
   * - any other id (`name`, `namespace/name`): the tenant's own dataset of that name, or the
   *   operator's (see {@link readable}): the ids before namespaces keep working.
   * Another tenant's dataset is never reached: its id names the other tenant, so it is looked up in
   * the caller's own space, where it is as missing as any unknown one.
   * @throws InvalidDatasetNameError for an id that is not a dataset name.
   */
  async locate(tenant: Tenant, id: string): Promise<DatasetLocation> {
    const slash = id.indexOf('/')
    if (slash > 0 && id.slice(0, slash) === tenant.name) {
      const own = this.outputs(tenant.id)
      const name = id.slice(slash + 1)
      if (await own.exists(name)) return { outputs: own, name, id }
    }
    const outputs = await this.readable(tenant.id, id)
    // A one-part name of the tenant's own is known to Hub clients under the tenant's namespace.
    return { outputs, name: id, id: slash < 0 && outputs !== this.operatorOutputs ? `${tenant.name}/${id}` : id }
  }

  /**
   * The output datasets a tenant reads `name` from: its own, or the operator's when only that has
   * it. Another tenant's dataset is never reachable: the answer is then the tenant's own root,
   * where the name is as missing as any unknown one.
   */
  async readable(tenant: string, name: string): Promise<OutputDatasets> {
    const own = this.outputs(tenant)
    if (this.operatorOutputs && !(await own.exists(name)) && (await this.operatorOutputs.exists(name))) return this.operatorOutputs
    return own
  }
}

/** An output dataset as the Hub routes found it (see {@link TenantSpaces.locate}). */
export interface DatasetLocation {
  /** The root it lives in. */
  outputs: OutputDatasets
  /** Its name in that root. */
  name: string
  /** Its Hub id, as the routes report it (`id` of the info): `{tenant name}/{name}` for a one-part name of a tenant's own. */
  id: string
}

function cached<T>(map: Map<string, T>, key: string, make: () => T): T {
  let v = map.get(key)
  if (v === undefined) {
    if (map.size >= MAX_CACHED) map.clear()
    map.set(key, (v = make()))
  }
  return v
}

/**
 * Moves the output repositories of a schema-v1 data folder (`<dataDir>/outputs/{name}.git`, shared
 * by every token) under their owners (`<dataDir>/tenants/<id>/outputs/`). The owner is the tenant
 * of the jobs that wrote the dataset (`owners`: bulk name → tenant ids of its jobs). A dataset with
 * no owner, or written by jobs of several tenants, stays where it is, readable by nobody, and a
 * warning says where it is and what to do. Idempotent: a moved repository is not there any more.
 * @returns how many repositories were moved.
 */
export async function migrateLegacyOutputs(spaces: TenantSpaces, owners: Map<string, Set<string>>, logger?: Logger): Promise<number> {
  const legacy = new OutputDatasets(join(spaces.dataDir, 'outputs'))
  let names: string[]
  try {
    names = await legacy.list()
  } catch {
    return 0
  }
  let moved = 0
  for (const name of names) {
    const tenants = [...(owners.get(name) ?? [])]
    if (tenants.length !== 1) {
      logger?.warn(
        `Output dataset ${name} (${legacy.gitdir(name)}) is from before tenants and ${tenants.length === 0 ? 'no job names its owner' : 'jobs of several tenants wrote it'}: ` +
          'nobody can read it. To give it to a tenant, move it to <dataDir>/tenants/<tenant id>/outputs/; to drop it, delete it',
      )
      continue
    }
    const target = spaces.outputs(tenants[0]).gitdir(name)
    if (await spaces.outputs(tenants[0]).exists(name)) {
      logger?.warn(`Output dataset ${name} (${legacy.gitdir(name)}) is from before tenants, and its owner already has one of that name at ${target}: left in place; merge or delete it`)
      continue
    }
    await fsp.mkdir(join(target, '..'), { recursive: true, mode: 0o700 })
    await fsp.rename(legacy.gitdir(name), target)
    await makePrivate(target)
    logger?.info(`Output dataset ${name} moved under its owner, ${target}`)
    moved++
  }
  return moved
}
