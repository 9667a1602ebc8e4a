//! Writes and reads TensorBoard event files: scalar and text summaries.
//!
//! # The format
//!
//! An event file (`events.out.tfevents.<secs>.<host>.<pid>.<n>`, see [`file_name`]) is a
//! sequence of TFRecords, each:
//!
//! | bytes | field |
//! |-------|-------|
//! | 8     | data length `n`, u64 little-endian |
//! | 4     | masked CRC-32C of those 8 bytes, u32 little-endian |
//! | `n`   | data: one serialized `tensorflow.Event` protobuf |
//! | 4     | masked CRC-32C of the data, u32 little-endian |
//!
//! The CRC is CRC-32C (Castagnoli, never the IEEE CRC-32), masked as
//! `((crc >> 15) | (crc << 17)) + 0xa282ead8` ([`masked_crc32c`]). The first event of a
//! file carries `file_version: "brain.Event:2"`; every later one a `Summary` of values:
//! a scalar as `simple_value` (a float, what TensorBoard's scalar dashboard reads), a text
//! as a rank-0 `DT_STRING` tensor whose metadata names the `text` plugin, which renders it
//! as Markdown. The protos are hand-written `prost` messages in [`proto`], with the field
//! numbers of TensorFlow's `event.proto`, `summary.proto` and `tensor.proto`.
//!
//! # Why our own
//!
//! There is no maintained Rust crate that writes event files, and the format is four
//! fields around a protobuf of which scalars and text need a handful of fields: `prost`
//! (already in the workspace) and `crc32c` (already used by the trainer) do the rest,
//! without protoc or a build script.
//!
//! # Use
//!
//! [`EventWriter`] writes to any `io::Write` (a local file); [`EventFile`] keeps the whole
//! file in memory, for object stores that can only replace an object (GCS), where the
//! trainer uploads the whole file again after each batch of events. [`read_events`] reads
//! a file back, checking every CRC; [`Event::scalars`] and [`Event::texts`] pick out what
//! was written.
//!
//! ```
//! use std::time::SystemTime;
//! use mtl_tfevents::{EventFile, read_events};
//!
//! let mut file = EventFile::new("trainer-0", 1, SystemTime::now());
//! file.scalar("train/loss", 10, 0.25);
//! file.text("hparams", 0, "| lr | 0.001 |");
//! assert!(file.name().starts_with("events.out.tfevents."));
//!
//! let events = read_events(file.bytes())?;
//! assert_eq!(events[0].file_version(), Some("brain.Event:2"));
//! assert_eq!(events[1].scalars().collect::<Vec<_>>(), [("train/loss", 10, 0.25)]);
//! assert_eq!(events[2].texts().next().unwrap().2, "| lr | 0.001 |");
//! # Ok::<(), mtl_tfevents::Error>(())
//! ```

pub mod proto;
mod record;
mod writer;

pub use proto::{Event, FILE_VERSION};
pub use record::{
    Part, RECORD_OVERHEAD, Record, Records, append_event, append_record, masked_crc32c,
    read_events, records,
};
pub use writer::{EventFile, EventWriter, file_name};

/// Errors writing or reading event files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying writer failed.
    #[error("writing events: {0}")]
    Io(#[from] std::io::Error),
    /// The file ends inside a record (`needed` bytes of `part` at `offset`, `available` left).
    #[error(
        "record at byte {record}: truncated {part} at byte {offset}: {needed} bytes needed, {available} left"
    )]
    Truncated {
        record: u64,
        part: Part,
        offset: u64,
        needed: u64,
        available: u64,
    },
    /// The CRC stored at `offset` does not match `part` ([`Part::Length`] or [`Part::Data`]).
    #[error(
        "record at byte {record}: {part} CRC-32C mismatch at byte {offset} (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Crc {
        record: u64,
        part: Part,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    /// A record's data (its CRC correct) is not a `tensorflow.Event`.
    #[error("record at byte {record}: not a tensorflow.Event: {source}")]
    Decode {
        record: u64,
        #[source]
        source: prost::DecodeError,
    },
}
