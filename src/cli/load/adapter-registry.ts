import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { CliError } from '../api.js'
import type { AdapterFactory } from './adapter.js'

// The `--target` names, kept apart from the adapter contract (adapter.ts): the built-in adapters
// implement that contract, so a registry beside it would make every adapter import itself.
const registry = new Map<string, () => Promise<AdapterFactory>>([
  ['switchboard', async () => (await import('./switchboard-adapter.js')).switchboardAdapter]
])

export function adapterNames (): string[] {
  return [...registry.keys()]
}

/**
 * The factory for `--target`: a built-in name, or a path to a module (`./x.ts`, `/abs/x.js`)
 * whose default export (or `adapter` export) is an AdapterFactory.
 */
export async function resolveAdapter (target: string): Promise<AdapterFactory> {
  const named = registry.get(target)
  if (named !== undefined) return await named()
  if (!/[/\\]/.test(target) && !/\.[cm]?[jt]s$/.test(target)) {
    throw new CliError(`--target: unknown target "${target}"; one of ${adapterNames().join(', ')}, or a path to an adapter module`, 2)
  }
  const file = isAbsolute(target) ? target : resolve(process.cwd(), target)
  let mod: { default?: unknown, adapter?: unknown }
  try {
    mod = await import(pathToFileURL(file).href) as { default?: unknown, adapter?: unknown }
  } catch (err) {
    throw new CliError(`--target: cannot load adapter module ${file} (${(err as Error).message})`, 2)
  }
  const factory = mod.default ?? mod.adapter
  if (typeof factory !== 'function') throw new CliError(`--target: ${file} has no default export (an adapter factory function)`, 2)
  return factory as AdapterFactory
}
