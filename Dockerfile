# syntax=docker/dockerfile:1
#
# SAM3 inference server on a CUDA GPU (README "Deployment").
#
#   docker build -t sam3-server .
#   docker run -d --gpus all -p 8000:8000 --stop-timeout 45 \
#     -v "$PWD/weights:/models:ro" sam3-server
#
# Stages: node (the Node 20 binaries), toolchain (CUDA devel image + cmake, g++, Python 3),
# torch-wheel | torch-zip | torch-local (CUDA LibTorch, chosen by TORCH_SOURCE), build (the
# addon and the TypeScript), runtime (CUDA base image, Node, ffmpeg, the build output).
#
# Build args:
#   TORCH_SOURCE=wheel  LibTorch from the torch wheel (TORCH_VERSION from TORCH_INDEX_URL), the
#                       torch pinned in tools/requirements.txt, so bundles exported by the venv
#                       match the runtime
#   TORCH_SOURCE=zip    LibTorch from a pytorch.org libtorch zip at LIBTORCH_URL (cxx11 ABI,
#                       "shared-with-deps")
#   TORCH_SOURCE=local  an unpacked libtorch on the build host, given as a named build context:
#                       --build-context libtorch=/path/to/libtorch (the LIBTORCH_DIR of setup)
#   CUDA_VERSION        the CUDA images; its major.minor must be the torch build's (cu128: 12.8)

ARG NODE_VERSION=20
ARG CUDA_VERSION=12.8.1
ARG TORCH_SOURCE=wheel

FROM node:${NODE_VERSION}-bookworm-slim AS node

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu22.04 AS toolchain
# find_package(Torch) of a CUDA LibTorch needs the CUDA toolkit (nvcc, headers) at configure
# time, hence the devel image; nothing is compiled for the GPU here.
RUN apt-get update \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    ca-certificates cmake curl g++ make ninja-build python3 python3-venv unzip \
  && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
  && node --version && npm --version

# Each torch-* stage leaves LibTorch in one layout: /opt/torch/torch/{lib,share/cmake}, and the
# CUDA libraries it loads from its RUNPATH ($ORIGIN/../../nvidia/*/lib) under /opt/torch/nvidia.
FROM toolchain AS torch-wheel
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN python3 -m venv /opt/pip \
  && /opt/pip/bin/pip install --no-cache-dir --target /opt/torch \
    --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
  && mkdir -p /opt/torch/nvidia \
  && test -f /opt/torch/torch/share/cmake/Torch/TorchConfig.cmake

FROM toolchain AS torch-zip
ARG LIBTORCH_URL
RUN test -n "${LIBTORCH_URL}" || { echo 'TORCH_SOURCE=zip needs --build-arg LIBTORCH_URL=...' >&2; exit 1; } \
  && curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" \
  && unzip -q /tmp/libtorch.zip -d /tmp/unpacked \
  && mkdir -p /opt/torch/nvidia \
  && mv /tmp/unpacked/libtorch /opt/torch/torch \
  && rm -rf /tmp/libtorch.zip /tmp/unpacked \
  && test -f /opt/torch/torch/share/cmake/Torch/TorchConfig.cmake

# Empty unless the build replaces it: --build-context libtorch=/path/to/libtorch.
FROM scratch AS libtorch

FROM toolchain AS torch-local
COPY --from=libtorch / /opt/torch/torch/
RUN mkdir -p /opt/torch/nvidia \
  && test -f /opt/torch/torch/share/cmake/Torch/TorchConfig.cmake \
  || { echo 'TORCH_SOURCE=local needs --build-context libtorch=/path/to/libtorch' >&2; exit 1; }

FROM torch-${TORCH_SOURCE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY CMakeLists.txt tsconfig.json ./
COPY native ./native
COPY src ./src
COPY clients/typescript/src ./clients/typescript/src
COPY web ./web
COPY scripts/build-web.mjs ./scripts/
# LIBTORCH_DIR: CMakeLists.txt links against it (there is no .venv in the image).
RUN LIBTORCH_DIR=/opt/torch/torch npm run build:native \
  && npm run build:ts \
  && npm run build:web \
  && npm prune --omit=dev --no-audit --no-fund

FROM nvidia/cuda:${CUDA_VERSION}-base-ubuntu22.04 AS runtime
# The base image (not cudnn-runtime): LibTorch brings its own CUDA and cuDNN libraries (the
# wheel's nvidia/* packages, or the zip's lib/); the NVIDIA container toolkit adds the driver.
RUN apt-get update \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    ca-certificates ffmpeg libmimalloc2.0 \
  && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=build /opt/torch/torch/lib /opt/torch/torch/lib
COPY --from=build /opt/torch/nvidia /opt/torch/nvidia
# The addon's RUNPATH names /opt/torch/torch/lib; the loader cache covers the libraries that
# LibTorch's own libraries load indirectly.
RUN find /opt/torch/torch/lib /opt/torch/nvidia -name '*.so*' -printf '%h\n' | sort -u \
    > /etc/ld.so.conf.d/sam3-libtorch.conf \
  && ldconfig
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/dist/web ./dist/web
COPY --from=build /src/build/Release/sam3.node ./build/Release/sam3.node
# npm start's launcher: preloads mimalloc (installed above) unless MEMORY_ALLOCATOR says otherwise
# (README "Memory allocator"), then execs node, which becomes PID 1 and receives the signals.
COPY scripts/start.sh scripts/with-allocator.sh ./scripts/
# Fail the build, not the first start, when a library is missing (the driver's libcuda comes
# from the host at run time).
RUN missing="$(ldd build/Release/sam3.node | grep 'not found' | grep -v 'libcuda\.so' || true)" \
  && { [ -z "${missing}" ] || { echo "sam3.node: missing libraries:" >&2; echo "${missing}" >&2; exit 1; }; }
RUN groupadd --system --gid 10001 sam3 \
  && useradd --system --uid 10001 --gid sam3 --home-dir /app --no-create-home \
    --shell /usr/sbin/nologin sam3 \
  && install -d -o sam3 -g sam3 -m 0750 /var/lib/sam3 /var/lib/sam3/uploads /var/lib/sam3/outputs \
  && install -d -m 0755 /models

ENV NODE_ENV=production \
  SERVER_HOST=0.0.0.0 \
  SERVER_PORT=8000 \
  SAM3_CHECKPOINT=/models/sam3 \
  UPLOAD_DIR=/var/lib/sam3/uploads \
  OUTPUT_DIR=/var/lib/sam3/outputs

# The model bundle (tools/export_sam3.py --out): mount the directory holding sam3/, read-only.
VOLUME ["/models"]
EXPOSE 8000
USER 10001:10001
# /health answers 200 only when the models are ready (503 while loading, degraded or stopping);
# the start period covers loading a full-size bundle onto the GPU.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.SERVER_PORT || 8000) + '/health', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]
# SIGTERM drains in-flight requests for SHUTDOWN_TIMEOUT_SECONDS (30): stop with a longer
# timeout (docker run --stop-timeout 45, compose stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["bash", "scripts/start.sh"]
