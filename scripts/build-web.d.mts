// Types of scripts/build-web.mjs, for the tests that call it (the script itself stays plain JS,
// so `npm start` runs it without a compile step).
export function webBuildStale (): boolean
export function buildWeb (options?: { outDir?: string }): Promise<void>
