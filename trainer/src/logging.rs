//! JSON log lines, one object per event: `timestamp`, `level`, `target`, `message` and the
//! event's fields, flattened. Fields that hold JSON documents by name (`task_losses`,
//! `metrics`) are written as JSON values rather than as strings, so a reader gets
//! `"task_losses": {"rte": 0.61}` and not a string to parse again. tracing records field values
//! as text or numbers only, hence this formatter.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields whose text is a JSON document, written as JSON.
const JSON_FIELDS: [&str; 2] = ["task_losses", "metrics"];

/// The event formatter; install with `tracing_subscriber::fmt().event_format(JsonLines)`.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", line(event))
    }
}

/// One event as a JSON object.
pub fn line(event: &Event<'_>) -> Value {
    let meta = event.metadata();
    let mut obj = Map::new();
    obj.insert(
        "timestamp".into(),
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    );
    obj.insert("level".into(), Value::String(meta.level().to_string()));
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    obj.extend(fields.0);
    obj.insert("target".into(), Value::String(meta.target().to_string()));
    Value::Object(obj)
}

struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_string(), value);
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.put(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_text(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_text(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record_text(&mut self, field: &Field, text: String) {
        let value = if JSON_FIELDS.contains(&field.name()) {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        self.put(field, value);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn json_fields_are_objects_and_the_rest_is_flat() {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let losses = serde_json::json!({"rte": 0.5, "stsb": 1.25}).to_string();
            let skipped: Option<f64> = None;
            tracing::info!(
                step = 3u64,
                loss = 0.75,
                grad_norm = skipped,
                task_losses = %losses,
                note = "not { json",
                "train"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["message"], "train");
        assert_eq!(v["step"], 3);
        assert_eq!(v["loss"], 0.75);
        assert_eq!(v["task_losses"]["stsb"], 1.25);
        assert_eq!(v["note"], "not { json");
        assert_eq!(v["level"], "INFO");
        assert!(v.get("grad_norm").is_none());
    }
}
