# syntax=docker/dockerfile:1
#
# Switchboard production image. Two stages: `build` compiles the TypeScript and the native
# addon (better-sqlite3) with the full toolchain, then drops the dev dependencies; `runtime`
# gets only dist/, the production node_modules and package.json, and runs as the `node` user.
#
#   docker build -t switchboard:0.1.0 .
#   docker run --rm -p 3000:3000 -e NODE_ENV=production -e JWT_SECRET="$(openssl rand -base64 48)" switchboard:0.1.0
#
# docs/deploy.md has the variables to set for several nodes (PostgreSQL, Redis) and Kubernetes.

# Both stages must use the same base: node_modules carries a native addon compiled against this
# image's glibc and Node ABI. Pin a digest (node:24-bookworm-slim@sha256:…) for reproducible builds.
# Node 24 is an LTS line with security support until April 2028; Node 20's ended in April 2026
# (package.json's engines still admit 20.19+ for those who run the server outside the image).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
# better-sqlite3 downloads a prebuilt binary when one matches; python3, make and g++ let
# node-gyp compile it from source when none does (new Node patch, other architecture).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Manifests first: the dependency layer is reused until package-lock.json changes. The
# workspace packages' manifests too: npm ci links them into node_modules/@switchboard/.
COPY package.json package-lock.json ./
COPY packages/protocol/package.json ./packages/protocol/
COPY packages/client/package.json ./packages/client/
COPY packages/cli/package.json ./packages/cli/
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
# The wire contract and the SDK (the server imports the first, the web app bundles the second).
COPY packages ./packages
COPY src ./src
COPY plugins ./plugins
COPY routes ./routes
# The web app: its sources and the esbuild script that bundles them into dist/web; the step that
# copies the Lua scripts (src/**/lua/*.lua) next to the compiled modules.
COPY web ./web
COPY scripts/build-web.mjs scripts/copy-lua.mjs ./scripts/
# `npm run build` writes dist/ (tsc -p tsconfig.build.json, the Lua scripts, then the web bundle); pruning afterwards keeps the
# compiled native addon, which a second `npm ci --omit=dev` would have to build again.
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# The default DATA_DIR (./data) for a single node on the embedded SQLite store: the only path
# the server writes to. Mount a volume here to keep it. Several nodes use PostgreSQL instead.
RUN mkdir -p /app/data && chown node:node /app/data
# Code stays owned by root: the server process cannot modify what it runs.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
# node_modules/@switchboard/* are links to these: the wire contract the server imports at run time
# (and the SDK, for the CLI), manifests and compiled modules only.
COPY --from=build /app/packages/protocol/package.json ./packages/protocol/
COPY --from=build /app/packages/protocol/dist ./packages/protocol/dist
COPY --from=build /app/packages/client/package.json ./packages/client/
COPY --from=build /app/packages/client/dist ./packages/client/dist
COPY --from=build /app/dist ./dist
# uid 1000 in the official Node images; Kubernetes needs the number (runAsUser: 1000) to
# verify runAsNonRoot, since it cannot resolve a user name inside the image.
USER node
EXPOSE 3000
# The server drains WebSockets on SIGTERM, then exits 0 (see docs/deploy.md).
STOPSIGNAL SIGTERM
# Liveness through Node itself: the slim image has no curl or wget. Follows PORT and TLS.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const s=process.env.TLS_CERT_FILE?'https':'http';require(s).get(s+'://127.0.0.1:'+(process.env.PORT||3000)+'/health/live',{rejectUnauthorized:false},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"]
# node directly, not `npm start`: npm does not forward SIGTERM, and the drain depends on it.
CMD ["node", "dist/src/server.js"]
