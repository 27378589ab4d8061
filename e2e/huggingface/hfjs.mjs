// Drives the real huggingface.js client (@huggingface/hub) against HUB_URL:
// downloads one file and a whole repo snapshot, prints {path: sha256} JSON.
import { createHash } from "node:crypto";
import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";

const hub = await import(process.env.HFJS_DIR + "/node_modules/@huggingface/hub/dist/index.mjs");
const hubUrl = process.env.HUB_URL;
const repo = process.env.HF_REPO;
const out = { file: {}, snapshot: {} };

const sha = (b) => createHash("sha256").update(b).digest("hex");

const blob = await hub.downloadFile({ repo, path: process.env.HF_FILE, hubUrl });
if (!blob) throw new Error("downloadFile returned null");
out.file[process.env.HF_FILE] = sha(Buffer.from(await blob.arrayBuffer()));

const dir = await hub.snapshotDownload({ repo, hubUrl, cacheDir: process.env.HF_CACHE });
async function walk(d, rel) {
	for (const e of await readdir(d)) {
		const p = join(d, e);
		const r = rel ? rel + "/" + e : e;
		if ((await stat(p)).isDirectory()) await walk(p, r);
		else out.snapshot[r] = sha(await readFile(p));
	}
}
await walk(dir, "");
console.log(JSON.stringify(out));
