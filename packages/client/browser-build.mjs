// How code with the SDK inside is bundled for browsers: by the package's own browser bundle
// (build-browser.mjs) and by the web app (scripts/build-web.mjs), so both reach the same browsers.
export const BROWSER_BUILD = {
  bundle: true,
  format: 'esm',
  platform: 'browser',
  // Browsers of the last few years; the SDK needs nothing newer than ES2020.
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  minify: true,
  sourcemap: 'linked',
  logLevel: 'warning'
}
