//! TFRecord framing: length, masked CRC-32C of the length, data, masked CRC-32C of the data.

use std::fmt;

use prost::Message;

use crate::Error;
use crate::proto::Event;

/// Added to the rotated CRC by [`masked_crc32c`] (TFRecord's `kMaskDelta`).
const MASK_DELTA: u32 = 0xa282_ead8;

/// Bytes a record adds around its data: the 8-byte length and two 4-byte CRCs.
pub const RECORD_OVERHEAD: usize = 16;

/// TFRecord's masked CRC-32C (Castagnoli) of `data`: the CRC rotated right by 15 bits plus
/// `0xa282ead8`, so that a CRC stored inside CRC'd data does not checksum to a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(MASK_DELTA)
}

/// Appends `data` framed as one TFRecord to `out`.
pub fn append_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.reserve(data.len() + RECORD_OVERHEAD);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Appends `event`, serialized and framed as one TFRecord, to `out`.
pub fn append_event(out: &mut Vec<u8>, event: &Event) {
    append_record(out, &event.encode_to_vec());
}

/// A part of a record, as named in [`Error`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The u64 little-endian data length.
    Length,
    /// The masked CRC-32C of the length.
    LengthCrc,
    /// The data (a serialized `tensorflow.Event`).
    Data,
    /// The masked CRC-32C of the data.
    DataCrc,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Length => "length",
            Part::LengthCrc => "length CRC",
            Part::Data => "data",
            Part::DataCrc => "data CRC",
        })
    }
}

/// One record's data and where its record starts in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Byte offset of the record (its length field) in the file.
    pub offset: u64,
    /// The record's data.
    pub data: &'a [u8],
}

/// An iterator over the records of a file's bytes that checks both CRCs of each; it yields
/// one error (truncation or CRC mismatch) and then ends.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterates over the TFRecords in `bytes`.
pub fn records(bytes: &[u8]) -> Records<'_> {
    Records {
        bytes,
        pos: 0,
        failed: false,
    }
}

/// Decodes every event of an event file's bytes, checking both CRCs of every record.
///
/// Errors name the byte offset of the record and of the part that is truncated or whose
/// CRC does not match.
pub fn read_events(bytes: &[u8]) -> Result<Vec<Event>, Error> {
    records(bytes)
        .map(|record| {
            let record = record?;
            Event::decode(record.data).map_err(|source| Error::Decode {
                record: record.offset,
                source,
            })
        })
        .collect()
}

impl<'a> Records<'a> {
    /// `len` bytes at `at` (`at` <= the file length), or a truncation error.
    fn part(&self, record: usize, at: usize, len: u64, part: Part) -> Result<&'a [u8], Error> {
        let available = self.bytes.len() - at;
        match usize::try_from(len) {
            Ok(n) if n <= available => Ok(&self.bytes[at..at + n]),
            _ => Err(Error::Truncated {
                record: record as u64,
                part,
                offset: at as u64,
                needed: len,
                available: available as u64,
            }),
        }
    }

    fn check(&self, record: usize, at: usize, covered: &[u8], part: Part) -> Result<(), Error> {
        let crc = self.part(record, at, 4, part_crc(part))?;
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = masked_crc32c(covered);
        if stored == computed {
            Ok(())
        } else {
            Err(Error::Crc {
                record: record as u64,
                part,
                offset: at as u64,
                stored,
                computed,
            })
        }
    }

    fn read(&mut self) -> Result<Record<'a>, Error> {
        let start = self.pos;
        let len_bytes = self.part(start, start, 8, Part::Length)?;
        self.check(start, start + 8, len_bytes, Part::Length)?;
        let mut len = [0; 8];
        len.copy_from_slice(len_bytes);
        let data_at = start + 12;
        let data = self.part(start, data_at, u64::from_le_bytes(len), Part::Data)?;
        self.check(start, data_at + data.len(), data, Part::Data)?;
        self.pos = data_at + data.len() + 4;
        Ok(Record {
            offset: start as u64,
            data,
        })
    }
}

fn part_crc(part: Part) -> Part {
    match part {
        Part::Length => Part::LengthCrc,
        _ => Part::DataCrc,
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos == self.bytes.len() {
            return None;
        }
        let record = self.read();
        self.failed = record.is_err();
        Some(record)
    }
}

impl std::iter::FusedIterator for Records<'_> {}
