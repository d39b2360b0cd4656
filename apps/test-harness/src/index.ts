// Fixture builder: build OCI layouts from tree specs, the named fixture corpus, random images.

export type { PushTarget } from './distribution/push-layout.ts';
export { pushLayout } from './distribution/push-layout.ts';
// The real CNCF distribution registry as a child process, and the tools around it.
export type {
  DistributionMode,
  DistributionOptions,
  DistributionRegistry,
  DistributionRequest,
  PushOptions,
} from './distribution/start-distribution.ts';
export {
  DEFAULT_DISTRIBUTION_USERS,
  DISTRIBUTION_TOKEN_SERVICE,
  startDistribution,
} from './distribution/start-distribution.ts';
export type { TokenRequestRecord } from './distribution/token-server.ts';
export type { SkopeoOptions, ToolResult } from './distribution/tools.ts';
export { requireTool, skopeo } from './distribution/tools.ts';
export type {
  BuildFixtureOptions,
  BuildImageOptions,
  BuiltBlob,
  BuiltImage,
  BuiltLayer,
  BuiltManifest,
  Compression,
  DeviceEntry,
  DirEntry,
  EntryMeta,
  ExpectedOutcome,
  FifoEntry,
  FileContent,
  FileEntry,
  Fixture,
  FixtureName,
  FixtureSpec,
  FixtureTag,
  FormatTreeOptions,
  HardlinkEntry,
  ImageFormat,
  ImageSpec,
  IndexSpec,
  LayerBlob,
  LayerSpec,
  LayerTamper,
  LayerTarOptions,
  ListTreeOptions,
  RandomImageOptions,
  RawEntry,
  RawHeader,
  SymlinkEntry,
  SystemTreeImageOptions,
  TreeEntries,
  TreeEntry,
  TreeNode,
  TreeNodeType,
  WriteLayoutOptions,
} from './fixtures/index.ts';
export {
  blobPath,
  blockDevice,
  buildCorpus,
  buildFixture,
  buildImage,
  buildLayer,
  charDevice,
  contentDigest,
  contentSize,
  createLayerTar,
  DEFAULT_CREATED,
  DEFAULT_GZIP_LEVEL,
  DEFAULT_MTIME,
  DEFAULT_PLATFORM,
  DEFAULT_PLATFORMS,
  DEFAULT_ZSTD_LEVEL,
  DOCKER_LAYER_TAR,
  dir,
  fifo,
  file,
  filledBytes,
  fixtureNames,
  fixtures,
  formatTree,
  hardlink,
  layerTarBytes,
  layoutBlobSource,
  listTree,
  normalizeEntryPath,
  opaque,
  Prng,
  REF_NAME_ANNOTATION,
  randomBytes,
  randomImage,
  raw,
  readLayoutBlob,
  readLayoutIndex,
  readOnlyCommand,
  setTreeMode,
  symlink,
  systemTreeImage,
  TAR_BOMB_ENTRIES,
  treeStamp,
  whiteout,
  writeHeaderChecksum,
  writeLayout,
} from './fixtures/index.ts';
// In-process registry: serves OCI layouts over the distribution API, push side, auth modes, scripted faults.
export type { AccessPolicy, RegistryAction, RegistryAuth } from './registry/auth.ts';
export { DEFAULT_TOKEN_EXPIRES_IN, DEFAULT_TOKEN_SERVICE } from './registry/auth.ts';
export type {
  FaultAction,
  FaultController,
  FaultHandle,
  FaultMatch,
  FaultRule,
  RouteKind,
} from './registry/faults.ts';
export type { ServeAuth, ServeDirectoryOptions } from './registry/serve-directory.ts';
export { findLayouts, serveDirectory } from './registry/serve-directory.ts';
export type {
  HarnessRegistry,
  RedirectOrigin,
  RegistryOptions,
  RequestRecord,
} from './registry/start-registry.ts';
export { startRegistry } from './registry/start-registry.ts';
