import type { Readable } from 'node:stream';

/** A validated `algorithm:encoded` digest. Make one with `parseDigest` from `@ocipull/digest`. */
export type Digest = string & { readonly __ocipullDigest: true };

/** A platform as the OCI image index describes it (image-index.md). */
export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  features?: string[];
}

/** A content descriptor exactly as the OCI image spec has it (descriptor.md). */
export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  data?: string;
}

/** An OCI image manifest or Docker v2 schema 2 manifest. */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** An OCI image index or Docker manifest list. */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** The runtime part of an image config (config.md `config`). */
export interface ImageRuntimeConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
}

/** An image config (config.md). */
export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  config?: ImageRuntimeConfig;
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: Array<{
    created?: string;
    author?: string;
    created_by?: string;
    comment?: string;
    empty_layer?: boolean;
  }>;
}

/** Options for reading a blob. */
export interface FetchOptions {
  /** Start this many bytes into the blob (resume). Default 0. */
  offset?: number;
  /** Cancels the request and the stream. */
  signal?: AbortSignal;
  /**
   * Where the request stands among those waiting for a connection to the same registry: lower goes
   * first, ties in order of arrival. A pull gives a layer its index, so the layers the rootfs needs
   * next are not queued behind upper ones. Default 0. The registry client orders its direct blob reads
   * by it; sources that keep no queue of their own ignore it.
   */
  priority?: number;
}

/**
 * Anything that can produce a blob's bytes: a registry, an OCI layout, the cache. The stream yields
 * the blob from `offset` to its end; sources do not verify, consumers do (with `@ocipull/digest`).
 */
export interface BlobSource {
  fetch(descriptor: Descriptor, options?: FetchOptions): Promise<Readable>;
  /**
   * Optional, for sources that can do it cheaper than `fetch`: hands the blob from `offset` to `sink`
   * chunk by chunk and resolves when every byte was handed over (a registry reads large blobs into a
   * few reused buffers this way). The same errors as `fetch` and its stream; on a cut transfer, the
   * bytes the sink finished are the new offset.
   */
  fetchInto?(descriptor: Descriptor, sink: BlobSink, options?: FetchOptions): Promise<void>;
}

/**
 * Receives a blob's bytes in order. `chunk` may be a view into a buffer the source reuses: it is valid
 * only until the call returns or, when the sink returns a promise, until that promise settles (the
 * next call waits for it). Copy what you keep. A sink that throws or rejects ends the transfer with
 * that error.
 */
export type BlobSink = (chunk: Buffer) => void | Promise<void>;

/** Options for `BlobStore.ingest`. */
export interface IngestOptions {
  signal?: AbortSignal;
  /** Passed to the source's fetch: see `FetchOptions.priority`. */
  priority?: number;
  /** Called as bytes are committed to the store. */
  onProgress?: (event: { bytes: number; total: number; resumedFrom: number }) => void;
}

/** What `BlobStore.ingest` did. */
export interface IngestResult {
  /** True when the blob was already present and nothing was read from the source. */
  cached: boolean;
  /** The offset a resumed download restarted from (0 for a fresh one). */
  resumedFrom: number;
}

/** A `BlobSource` that can also keep blobs: check, ingest (resumable, verified) and remove. */
export interface BlobStore extends BlobSource {
  has(descriptor: Pick<Descriptor, 'digest'> & Partial<Descriptor>): Promise<boolean>;
  ingest(descriptor: Descriptor, source: BlobSource, options?: IngestOptions): Promise<IngestResult>;
  remove(digest: Digest): Promise<void>;
}
