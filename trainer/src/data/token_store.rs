//! The token store: one data file tokenized into what training needs and nothing else.
//!
//! | part | per | bytes |
//! |---|---|---|
//! | token ids, back to back | token | 2 (vocabulary ≤ 65536) or 4 |
//! | segment ids | token | 1, only when the model has several token types |
//! | sequence start offsets | sequence | 8 |
//! | labels (NaN when absent) | example | 8 |
//!
//! Every example of a store has the same number of sequences: 1, or one per choice. A store
//! on disk is a directory of four files and a `meta.json` naming their sizes and CRC-32C; it
//! is memory-mapped, so training touches the pages of the batches it reads and the kernel may
//! drop them again (see `cache.rs` for where stores live and how they are built).
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const META_FILE: &str = "meta.json";
const IDS_FILE: &str = "ids.bin";
const TYPES_FILE: &str = "types.bin";
const OFFSETS_FILE: &str = "offsets.bin";
const LABELS_FILE: &str = "labels.bin";
/// Layout version, part of every cache key.
pub const FORMAT: u32 = 1;

/// `meta.json`: what the files of a store hold; written last, so a store without it is
/// incomplete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub format: u32,
    pub examples: u64,
    pub sequences: u64,
    pub tokens: u64,
    /// Sequences per example.
    pub choices: u32,
    /// Bytes per token id: 2 or 4.
    pub id_bytes: u32,
    pub has_types: bool,
    /// CRC-32C of each file, by name.
    pub crc32c: std::collections::BTreeMap<String, u32>,
    /// What the store was built from (for people reading the cache).
    pub source: String,
}

/// Bytes of one part: a memory-mapped file (an empty file is not mapped).
enum Part {
    Mapped(memmap2::Mmap),
    Empty,
}

impl std::ops::Deref for Part {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Part::Mapped(m) => m,
            Part::Empty => &[],
        }
    }
}

/// One tokenized data file.
pub struct TokenStore {
    meta: Meta,
    ids: Part,
    types: Part,
    offsets: Part,
    labels: Part,
}

/// One sequence of a store: its token ids and (for models with several token types) its
/// segment ids.
pub struct Sequence<'a> {
    ids: &'a [u8],
    id_bytes: usize,
    pub types: Option<&'a [u8]>,
}

impl Sequence<'_> {
    pub fn len(&self) -> usize {
        self.ids.len() / self.id_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The token ids.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.chunks_exact(self.id_bytes).map(|b| match b {
            [a, b] => u32::from(u16::from_le_bytes([*a, *b])),
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
            _ => 0,
        })
    }
}

fn read_u64(bytes: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_le_bytes(b)
}

impl TokenStore {
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn len(&self) -> usize {
        self.meta.examples as usize
    }

    pub fn is_empty(&self) -> bool {
        self.meta.examples == 0
    }

    pub fn choices(&self) -> usize {
        self.meta.choices as usize
    }

    /// Bytes the store's parts take.
    pub fn bytes(&self) -> usize {
        self.ids.len() + self.types.len() + self.offsets.len() + self.labels.len()
    }

    /// The label of example `i` (None when the file had none).
    pub fn label(&self, i: usize) -> Option<f64> {
        let x = f64::from_bits(read_u64(&self.labels, i));
        (!x.is_nan()).then_some(x)
    }

    /// Sequence `j` of example `i`.
    pub fn sequence(&self, i: usize, j: usize) -> Sequence<'_> {
        let s = i * self.choices() + j;
        let (start, end) = (
            read_u64(&self.offsets, s) as usize,
            read_u64(&self.offsets, s + 1) as usize,
        );
        let w = self.meta.id_bytes as usize;
        Sequence {
            ids: &self.ids[start * w..end * w],
            id_bytes: w,
            types: self.meta.has_types.then(|| &self.types[start..end]),
        }
    }

    /// Opens a store written by [`TokenStoreWriter::finish`], checking every part's size and
    /// CRC-32C against `meta.json`: a store that fails is reported, never used.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&meta_path).map_err(Error::io(&meta_path))?;
        let meta: Meta = serde_json::from_str(&text)
            .map_err(|e| Error::file(meta_path.display(), format!("unreadable: {e}")))?;
        if meta.format != FORMAT {
            return Err(Error::file(
                meta_path.display(),
                format!("format {} is not {FORMAT}", meta.format),
            ));
        }
        let sizes = [
            (IDS_FILE, meta.tokens * u64::from(meta.id_bytes)),
            (TYPES_FILE, if meta.has_types { meta.tokens } else { 0 }),
            (OFFSETS_FILE, (meta.sequences + 1) * 8),
            (LABELS_FILE, meta.examples * 8),
        ];
        let mut parts = Vec::with_capacity(4);
        for (name, size) in sizes {
            let part = map(&dir.join(name), size)?;
            let want = meta.crc32c.get(name).copied().unwrap_or_default();
            let got = crc32c::crc32c(&part);
            if got != want {
                return Err(Error::file(
                    dir.join(name).display(),
                    format!("CRC-32C {got:08x}, meta.json says {want:08x}"),
                ));
            }
            parts.push(part);
        }
        if meta.sequences != meta.examples * u64::from(meta.choices) {
            return Err(Error::file(
                meta_path.display(),
                "sequence count is not examples × choices",
            ));
        }
        let mut it = parts.into_iter();
        let (ids, types, offsets, labels) = (
            it.next().unwrap_or(Part::Empty),
            it.next().unwrap_or(Part::Empty),
            it.next().unwrap_or(Part::Empty),
            it.next().unwrap_or(Part::Empty),
        );
        if read_u64(&offsets, meta.sequences as usize) != meta.tokens {
            return Err(Error::file(
                dir.join(OFFSETS_FILE).display(),
                "offsets do not end at the token count",
            ));
        }
        Ok(Self {
            meta,
            ids,
            types,
            offsets,
            labels,
        })
    }
}

/// Maps a part of `size` bytes (a zero-length part is not mapped).
fn map(path: &Path, size: u64) -> Result<Part> {
    let file = File::open(path).map_err(Error::io(path))?;
    let len = file.metadata().map_err(Error::io(path))?.len();
    if len != size {
        return Err(Error::file(
            path.display(),
            format!("{len} bytes, meta.json implies {size} (truncated or overwritten)"),
        ));
    }
    if size == 0 {
        return Ok(Part::Empty);
    }
    // SAFETY: a store's files are written once, in a directory that becomes visible under its
    // final name only by an atomic rename after every file is complete (`TokenStoreWriter`), and
    // nothing writes them afterwards: a rebuild writes a new directory and renames it over
    // the entry, which leaves this mapping's inode intact. The mapped bytes are only read
    // as plain integers, so no value read from them can be invalid.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(path))?;
    Ok(Part::Mapped(mmap))
}

/// Builds a store, appending examples as they are tokenized: token and segment ids stream to
/// their files; offsets and labels (a few bytes per example) are kept until the end.
pub struct TokenStoreWriter {
    dir: PathBuf,
    ids: BufWriter<File>,
    types: Option<BufWriter<File>>,
    crc_ids: u32,
    crc_types: u32,
    offsets: Vec<u64>,
    labels: Vec<f64>,
    tokens: u64,
    choices: Option<u32>,
    id_bytes: u32,
    has_types: bool,
    source: String,
}

impl TokenStoreWriter {
    /// Writes into `dir` (created; it must not exist). `id_bytes`: 2 when every id fits 16
    /// bits, else 4; `types`: keep segment ids.
    pub fn create(dir: &Path, id_bytes: u32, types: bool, source: &str) -> Result<Self> {
        std::fs::create_dir(dir).map_err(Error::io(dir))?;
        let open = |name: &str| -> Result<BufWriter<File>> {
            let p = dir.join(name);
            Ok(BufWriter::with_capacity(
                1 << 20,
                File::create(&p).map_err(Error::io(&p))?,
            ))
        };
        Ok(Self {
            ids: open(IDS_FILE)?,
            types: if types { Some(open(TYPES_FILE)?) } else { None },
            dir: dir.to_path_buf(),
            crc_ids: 0,
            crc_types: 0,
            offsets: vec![0],
            labels: Vec::new(),
            tokens: 0,
            choices: None,
            id_bytes,
            has_types: types,
            source: source.to_string(),
        })
    }

    /// Appends one example: its sequences as (ids, segment ids), and its label.
    pub fn push<'a>(
        &mut self,
        seqs: impl ExactSizeIterator<Item = (&'a [u32], &'a [u32])>,
        label: Option<f64>,
    ) -> Result<()> {
        let n = seqs.len() as u32;
        match self.choices {
            None => self.choices = Some(n),
            Some(c) if c != n => {
                return Err(Error::Invalid(format!(
                    "{}: an example has {n} sequences, earlier ones {c}",
                    self.source
                )));
            }
            Some(_) => {}
        }
        let path = self.dir.join(IDS_FILE);
        for (ids, types) in seqs {
            let mut buf = Vec::with_capacity(ids.len() * self.id_bytes as usize);
            for &id in ids {
                if self.id_bytes == 2 {
                    let id = u16::try_from(id).map_err(|_| {
                        Error::Invalid(format!(
                            "{}: token id {id} does not fit 16 bits",
                            self.source
                        ))
                    })?;
                    buf.extend_from_slice(&id.to_le_bytes());
                } else {
                    buf.extend_from_slice(&id.to_le_bytes());
                }
            }
            self.crc_ids = crc32c::crc32c_append(self.crc_ids, &buf);
            self.ids.write_all(&buf).map_err(Error::io(&path))?;
            if let Some(w) = &mut self.types {
                let t: Vec<u8> = types.iter().map(|&t| t.min(255) as u8).collect();
                self.crc_types = crc32c::crc32c_append(self.crc_types, &t);
                let path = self.dir.join(TYPES_FILE);
                w.write_all(&t).map_err(Error::io(&path))?;
            }
            self.tokens += ids.len() as u64;
            self.offsets.push(self.tokens);
        }
        self.labels.push(label.unwrap_or(f64::NAN));
        Ok(())
    }

    pub fn examples(&self) -> usize {
        self.labels.len()
    }

    /// Writes offsets, labels and `meta.json` (last) and syncs every file; returns the meta.
    pub fn finish(self) -> Result<Meta> {
        let sync = |w: BufWriter<File>, path: &Path| -> Result<()> {
            let f = w
                .into_inner()
                .map_err(|e| Error::io(path)(e.into_error()))?;
            f.sync_all().map_err(Error::io(path))
        };
        sync(self.ids, &self.dir.join(IDS_FILE))?;
        if let Some(t) = self.types {
            sync(t, &self.dir.join(TYPES_FILE))?;
        } else {
            let p = self.dir.join(TYPES_FILE);
            File::create(&p).map_err(Error::io(&p))?;
        }
        let write = |name: &str, bytes: &[u8]| -> Result<u32> {
            let p = self.dir.join(name);
            let mut f = File::create(&p).map_err(Error::io(&p))?;
            f.write_all(bytes).map_err(Error::io(&p))?;
            f.sync_all().map_err(Error::io(&p))?;
            Ok(crc32c::crc32c(bytes))
        };
        let offsets: Vec<u8> = self.offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        let labels: Vec<u8> = self
            .labels
            .iter()
            .flat_map(|l| l.to_bits().to_le_bytes())
            .collect();
        let crc_offsets = write(OFFSETS_FILE, &offsets)?;
        let crc_labels = write(LABELS_FILE, &labels)?;
        let examples = self.labels.len() as u64;
        let meta = Meta {
            format: FORMAT,
            examples,
            sequences: self.offsets.len() as u64 - 1,
            tokens: self.tokens,
            choices: self.choices.unwrap_or(1),
            id_bytes: self.id_bytes,
            has_types: self.has_types,
            crc32c: [
                (IDS_FILE.to_string(), self.crc_ids),
                (TYPES_FILE.to_string(), self.crc_types),
                (OFFSETS_FILE.to_string(), crc_offsets),
                (LABELS_FILE.to_string(), crc_labels),
            ]
            .into(),
            source: self.source.clone(),
        };
        let text = serde_json::to_string_pretty(&meta)
            .map_err(|e| Error::Invalid(format!("meta.json: {e}")))?;
        write(META_FILE, text.as_bytes())?;
        Ok(meta)
    }
}
