//! Prepares the console's assets once, at build time, so that serving them costs nothing:
//!
//! - every JavaScript module and stylesheet gets a name carrying a hash of its content
//!   (`app.3f2a…js`), so browsers may cache it forever and a new build is never mixed with an
//!   old one. A module's hash covers the hashed names of the modules it imports (they are
//!   rewritten first), so changing `dom.js` renames every module that imports it;
//! - `index.html` is rewritten to name them, and gets a `modulepreload` link for each module, so
//!   the browser fetches the whole module graph at once rather than import by import;
//! - each file is compressed once with gzip (best level);
//! - `assets.rs` in `OUT_DIR` lists them all for `include_bytes!`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where `index.html` wants the `modulepreload` links.
const PRELOAD_MARKER: &str = "<!-- modulepreload -->";

/// Hex digits of the content hash in a file name.
const NAME_HASH_LEN: usize = 10;

fn main() {
    if let Err(e) = run() {
        panic!("preparing the console assets: {e}");
    }
}

/// One file as served.
struct Prepared {
    /// Its name under `/ui/` (empty for the index).
    served: String,
    content_type: &'static str,
    bytes: Vec<u8>,
    /// Named by its content: cached forever.
    immutable: bool,
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env("OUT_DIR")?);
    let dir = manifest.join("assets");
    println!("cargo::rerun-if-changed=assets");

    let mut sources = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: not a UTF-8 file name", path.display()))?
            .to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{name}: {e}"))?;
        sources.insert(name, text);
    }

    let mut hashed = BTreeMap::new();
    let mut prepared = Vec::new();
    let modules: Vec<String> = sources
        .keys()
        .filter(|n| n.ends_with(".js"))
        .cloned()
        .collect();
    for module in &modules {
        hash_module(
            module,
            &sources,
            &mut hashed,
            &mut prepared,
            &mut Vec::new(),
        )?;
    }
    for (name, text) in &sources {
        if let Some(stem) = name.strip_suffix(".css") {
            let served = format!("{stem}.{}.css", short_hash(text.as_bytes()));
            hashed.insert(name.clone(), served.clone());
            prepared.push(Prepared {
                served,
                content_type: "text/css; charset=utf-8",
                bytes: text.clone().into_bytes(),
                immutable: true,
            });
        } else if !name.ends_with(".js") && name != "index.html" {
            return Err(format!(
                "{name}: the console serves only index.html, .js and .css files"
            ));
        }
    }

    let index = sources
        .get("index.html")
        .ok_or("assets/index.html is missing")?;
    if !index.contains(PRELOAD_MARKER) {
        return Err(format!("index.html lacks the marker {PRELOAD_MARKER}"));
    }
    let mut index = index.clone();
    for (name, served) in &hashed {
        index = index.replace(&format!("\"{name}\""), &format!("\"{served}\""));
    }
    let preloads: String = modules
        .iter()
        .map(|m| format!("<link rel=\"modulepreload\" href=\"{}\">\n", hashed[m]))
        .collect();
    index = index.replace(PRELOAD_MARKER, preloads.trim_end());
    prepared.push(Prepared {
        served: String::new(),
        content_type: "text/html; charset=utf-8",
        bytes: index.into_bytes(),
        immutable: false,
    });

    write_table(&out, &prepared)
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|e| format!("{name}: {e}"))
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..NAME_HASH_LEN].to_string()
}

/// The relative imports of a module: the single-quoted specifier of every line that starts an
/// import (`import … from './x.js';`, `import './x.js';`) or ends a multi-line one
/// (`} from './x.js';`). Modules import only each other, as `./name.js`.
fn imports(module: &str, text: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for line in text.lines().map(str::trim_start) {
        if !(line.starts_with("import ") || line.starts_with("} from ")) {
            continue;
        }
        let Some((_, rest)) = line.split_once('\'') else {
            continue; // `import {` opening a multi-line import
        };
        let specifier = rest
            .split('\'')
            .next()
            .ok_or_else(|| format!("{module}: unterminated import: {line}"))?;
        let name = specifier
            .strip_prefix("./")
            .filter(|n| n.ends_with(".js") && !n.contains('/'))
            .ok_or_else(|| {
                format!(
                    "{module}: import '{specifier}' is not one of the console's modules (./name.js)"
                )
            })?;
        found.push(name.to_string());
    }
    Ok(found)
}

/// Names `module` by its content after naming its imports, depth first.
fn hash_module(
    module: &str,
    sources: &BTreeMap<String, String>,
    hashed: &mut BTreeMap<String, String>,
    prepared: &mut Vec<Prepared>,
    visiting: &mut Vec<String>,
) -> Result<String, String> {
    if let Some(served) = hashed.get(module) {
        return Ok(served.clone());
    }
    if visiting.iter().any(|v| v == module) {
        return Err(format!(
            "import cycle: {} -> {module}",
            visiting.join(" -> ")
        ));
    }
    let text = sources.get(module).ok_or_else(|| {
        format!(
            "{}: imports {module}, which is missing",
            visiting.join(" -> ")
        )
    })?;
    visiting.push(module.to_string());
    let mut rewritten = text.clone();
    for import in imports(module, text)? {
        let served = hash_module(&import, sources, hashed, prepared, visiting)?;
        rewritten = rewritten.replace(&format!("'./{import}'"), &format!("'./{served}'"));
    }
    visiting.pop();
    let stem = module.strip_suffix(".js").unwrap_or(module);
    let served = format!("{stem}.{}.js", short_hash(rewritten.as_bytes()));
    hashed.insert(module.to_string(), served.clone());
    prepared.push(Prepared {
        served: served.clone(),
        content_type: "text/javascript; charset=utf-8",
        bytes: rewritten.into_bytes(),
        immutable: true,
    });
    Ok(served)
}

/// Writes every file and its gzip form to `out`, and `assets.rs` listing them.
fn write_table(out: &Path, prepared: &[Prepared]) -> Result<(), String> {
    let files = out.join("console");
    std::fs::create_dir_all(&files).map_err(|e| format!("{}: {e}", files.display()))?;
    let mut table = String::from(
        "/// The console's files, prepared by build.rs.\nstatic ASSETS: &[Asset] = &[\n",
    );
    for file in prepared {
        let stored = if file.served.is_empty() {
            "index.html"
        } else {
            &file.served
        };
        let raw = files.join(stored);
        let gz = files.join(format!("{stored}.gz"));
        std::fs::write(&raw, &file.bytes).map_err(|e| format!("{}: {e}", raw.display()))?;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder
            .write_all(&file.bytes)
            .and_then(|()| encoder.finish())
            .and_then(|compressed| std::fs::write(&gz, compressed))
            .map_err(|e| format!("{}: {e}", gz.display()))?;
        let digest = hex::encode(Sha256::digest(&file.bytes));
        writeln!(
            table,
            "    Asset {{ name: {:?}, content_type: {:?}, raw: include_bytes!({:?}), gzip: include_bytes!({:?}), tag: {:?}, immutable: {} }},",
            file.served,
            file.content_type,
            raw.display().to_string(),
            gz.display().to_string(),
            &digest[..32],
            file.immutable,
        )
        .map_err(|e| e.to_string())?;
    }
    table.push_str("];\n");
    let path = out.join("assets.rs");
    std::fs::write(&path, table).map_err(|e| format!("{}: {e}", path.display()))
}
