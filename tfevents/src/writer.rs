//! Writers: [`EventWriter`] to any `io::Write`, [`EventFile`] in memory, and [`file_name`].

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;
use crate::proto::Event;
use crate::record::append_event;

/// Where events' wall times come from.
#[derive(Clone, Copy, Debug)]
enum Clock {
    System,
    Fixed(f64),
}

impl Clock {
    fn now(self) -> f64 {
        match self {
            Clock::System => unix_seconds(SystemTime::now()),
            Clock::Fixed(t) => t,
        }
    }
}

/// Seconds since the Unix epoch (0 for times before it).
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes events, each framed as one TFRecord, to `W` (a file, usually buffered).
///
/// Each event is written with one `write_all`. Nothing is buffered here: wrap a file in a
/// `BufWriter` and [`flush`](Self::flush) to bound what a crash can lose.
#[derive(Debug)]
pub struct EventWriter<W: Write> {
    inner: W,
    clock: Clock,
    buf: Vec<u8>,
}

impl<W: Write> EventWriter<W> {
    /// Starts an event file on `inner`, writing its opening `file_version` event; events
    /// are stamped with the system clock.
    pub fn new(inner: W) -> Result<Self, Error> {
        Self::start(inner, Clock::System)
    }

    /// Like [`new`](Self::new), but every event's wall time is `wall_time`, which makes the
    /// output deterministic.
    pub fn with_wall_time(inner: W, wall_time: SystemTime) -> Result<Self, Error> {
        Self::start(inner, Clock::Fixed(unix_seconds(wall_time)))
    }

    fn start(inner: W, clock: Clock) -> Result<Self, Error> {
        let mut writer = EventWriter {
            inner,
            clock,
            buf: Vec::new(),
        };
        writer.write_event(&Event::file_version_event(clock.now()))?;
        Ok(writer)
    }

    /// Writes `event` as it is (its wall time included).
    pub fn write_event(&mut self, event: &Event) -> Result<(), Error> {
        self.buf.clear();
        append_event(&mut self.buf, event);
        self.inner.write_all(&self.buf)?;
        Ok(())
    }

    /// Writes a scalar summary (see [`Event::scalar`]).
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<(), Error> {
        self.write_event(&Event::scalar(self.clock.now(), tag, step, value))
    }

    /// Writes a text summary rendered as Markdown (see [`Event::text`]).
    pub fn text(&mut self, tag: &str, step: i64, markdown: &str) -> Result<(), Error> {
        self.write_event(&Event::text(self.clock.now(), tag, step, markdown))
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.inner.flush()?;
        Ok(())
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying writer (not flushed: call [`flush`](Self::flush) first if it buffers).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// A whole event file held in memory, with its name: for stores that replace whole objects
/// (GCS objects cannot be appended to), upload [`bytes`](Self::bytes) as
/// [`name`](Self::name) after each batch of events. Writing to memory cannot fail.
#[derive(Clone, Debug)]
pub struct EventFile {
    name: String,
    bytes: Vec<u8>,
    clock: Clock,
}

impl EventFile {
    /// Starts a file named by [`file_name`]`(hostname, pid, now)`, whose opening event is
    /// stamped `now`; later events are stamped with the system clock.
    pub fn new(hostname: &str, pid: u32, now: SystemTime) -> Self {
        Self::start(hostname, pid, now, Clock::System)
    }

    /// Like [`new`](Self::new), but every event's wall time is `now`.
    pub fn with_wall_time(hostname: &str, pid: u32, now: SystemTime) -> Self {
        Self::start(hostname, pid, now, Clock::Fixed(unix_seconds(now)))
    }

    fn start(hostname: &str, pid: u32, now: SystemTime, clock: Clock) -> Self {
        let mut file = EventFile {
            name: file_name(hostname, pid, now),
            bytes: Vec::new(),
            clock,
        };
        append_event(
            &mut file.bytes,
            &Event::file_version_event(unix_seconds(now)),
        );
        file
    }

    /// Appends `event` as it is (its wall time included).
    pub fn write_event(&mut self, event: &Event) {
        append_event(&mut self.bytes, event);
    }

    /// Appends a scalar summary (see [`Event::scalar`]).
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) {
        self.write_event(&Event::scalar(self.clock.now(), tag, step, value));
    }

    /// Appends a text summary rendered as Markdown (see [`Event::text`]).
    pub fn text(&mut self, tag: &str, step: i64, markdown: &str) {
        self.write_event(&Event::text(self.clock.now(), tag, step, markdown));
    }

    /// The file's name (no directory), `events.out.tfevents.…`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole file as written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole file's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Distinguishes the files one process starts in the same second (TensorBoard's writers
/// end the name with such a per-process counter too).
static NEXT_SUFFIX: AtomicU64 = AtomicU64::new(0);

/// A fresh event file name, `events.out.tfevents.<unix seconds, 10 digits>.<hostname>.<pid>.<n>`,
/// as TensorBoard's `EventFileWriter` names them: `n` counts the names this process has
/// made. TensorBoard takes any file whose name contains `tfevents` as an event file and
/// reads a directory's files in name order, that is, in time order. Characters of
/// `hostname` other than ASCII letters, digits, `-` and `_` become `_`, so the name is
/// one path segment (and dots stay field separators).
pub fn file_name(hostname: &str, pid: u32, now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut host: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if host.is_empty() {
        host.push_str("localhost");
    }
    let n = NEXT_SUFFIX.fetch_add(1, Ordering::Relaxed);
    format!("events.out.tfevents.{secs:010}.{host}.{pid}.{n}")
}
