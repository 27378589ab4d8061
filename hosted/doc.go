// Package hosted makes the repositories under one name prefix (config key
// hosted_prefix, default "local") a normal read-write OCI registry stored in
// the same content-addressed layout as the pull-through cache: push
// (monolithic, POST+PUT, chunked PATCH, streamed PATCH, cross-repository
// and anonymous mount), manifests by tag and digest, tags, referrers,
// deletes and the repository catalog.
//
// It follows the OCI distribution spec v1.1
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md,
// "Push", "Content Discovery" and "Content Management").
//
// Bytes go through cas's one verified ingest path (BlobStore.Writer) and so
// land in the shared blobs/ folder; names go into index.json through the
// NameStore as "<repo>:<tag>" and "<repo>@<digest>", where <repo> is the
// full name the client uses, prefix included ("local/team/model:v1").
//
// Blobs belong to repositories. Which repository may read which blob is
// kept in small files next to the layout, so several processes that open one
// root see the same state without a database:
//
//	ROOT/
//	├── index.json                       local/team/model:v1, local/team/model@sha256:...
//	├── blobs/sha256/<hex>               the bytes, shared with the cache
//	├── blobs/sha512/<hex>
//	└── .clowder/
//	    ├── hosted/
//	    │   └── local/team/model/        one folder per repository (its full name)
//	    │       ├── _blobs/<alg>/<hex>           empty file: the blob is linked here
//	    │       └── _referrers/<alg>/<hex>/      one file per manifest whose subject
//	    │           └── <alg>-<hex>.json         is <alg>:<hex>: its referrers descriptor
//	    └── uploads/<id>/                one folder per upload session
//	        ├── repo                     the repository it was started for
//	        └── data                     the bytes so far (flock'd while written)
//
// The "_" folders cannot collide with a repository path component: OCI
// components start with a lower-case letter or a digit. A blob DELETE
// removes only the link; the bytes stay under blobs/ until garbage
// collection, which must treat every link and every hosted name as a root.
// Upload data never appears under blobs/: a finished upload is copied
// through the verified ingest path and only the verified copy is renamed
// into place.
package hosted
