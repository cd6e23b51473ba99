// Types of scripts/copy-lua.mjs, for the tests that call it (the script itself stays plain JS,
// so `npm run build` and `npm start` run it without a compile step).
export function luaSources (): string[]
export function luaBuildStale (outDir?: string): boolean
export function copyLua (outDir?: string): string[]
