//! The subset of TensorFlow's protos that scalar and text summaries need, written by hand
//! with `prost` derives (no protoc, no build script).
//!
//! Field numbers and types follow `tensorflow/core/util/event.proto`,
//! `tensorflow/core/framework/{summary,tensor,tensor_shape,types}.proto` (mirrored in
//! TensorBoard as `tensorboard/compat/proto/`). Fields we do not model are skipped on
//! decoding, as protobuf requires, so events from other writers still parse. Fields are
//! declared in field-number order, so the encoding matches the canonical one that the C++
//! and Python protobuf libraries produce.

use std::borrow::Cow;

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step the event belongs to.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries (`oneof what`).
    #[prost(oneof = "event::What", tags = "3, 5")]
    pub what: Option<event::What>,
}

/// Nested types of [`Event`].
pub mod event {
    /// `Event.what`, the payload of an event (only the members this crate writes).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// The first event of a file: `"brain.Event:2"`.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// A set of summary values.
        #[prost(message, tag = "5")]
        Summary(super::Summary),
    }
}

/// `tensorflow.Summary`: a set of named values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

/// Nested types of [`Summary`].
pub mod summary {
    /// `tensorflow.Summary.Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The series' name, e.g. `train/loss`.
        #[prost(string, tag = "1")]
        pub tag: String,
        /// The value (`oneof value`).
        #[prost(oneof = "value::Value", tags = "2, 8")]
        pub value: Option<value::Value>,
        /// Which plugin reads the series (for tensor values).
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<super::SummaryMetadata>,
    }

    /// Nested types of [`Value`].
    pub mod value {
        /// `Summary.Value.value` (only the members this crate writes).
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A float, which TensorBoard's scalar dashboard reads.
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            /// A tensor, read by the plugin that the value's metadata names.
            #[prost(message, tag = "8")]
            Tensor(super::super::TensorProto),
        }
    }
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<summary_metadata::PluginData>,
    #[prost(string, tag = "2")]
    pub display_name: String,
    #[prost(string, tag = "3")]
    pub summary_description: String,
    #[prost(enumeration = "DataClass", tag = "4")]
    pub data_class: i32,
}

/// Nested types of [`SummaryMetadata`].
pub mod summary_metadata {
    /// `tensorflow.SummaryMetadata.PluginData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        /// E.g. `"text"`.
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        /// Plugin-specific, usually a serialized proto (empty for the text plugin's version 0).
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }
}

/// `tensorflow.DataClass`: the kind of time series a tag holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataClass {
    Unknown = 0,
    Scalar = 1,
    Tensor = 2,
    BlobSequence = 3,
}

/// `tensorflow.TensorProto` (the fields scalar and string tensors use).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(enumeration = "DataType", tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// `DT_FLOAT` values.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// `DT_STRING` values.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto`; no `dim` is a scalar (rank 0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

/// Nested types of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// `tensorflow.TensorShapeProto.Dim`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
        #[prost(string, tag = "2")]
        pub name: String,
    }
}

/// `tensorflow.DataType` (the members this crate uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    DtInvalid = 0,
    DtFloat = 1,
    DtString = 7,
}

/// The name of TensorBoard's text plugin, in [`summary_metadata::PluginData::plugin_name`].
pub const TEXT_PLUGIN: &str = "text";

/// The `file_version` of the first event of every file.
pub const FILE_VERSION: &str = "brain.Event:2";

impl Event {
    /// The event that opens a file, carrying [`FILE_VERSION`].
    pub fn file_version_event(wall_time: f64) -> Self {
        Event {
            wall_time,
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_owned())),
        }
    }

    /// A scalar summary: `value` as the `simple_value` float that TensorBoard's scalar
    /// dashboard reads (an `f64` outside `f32`'s range becomes infinite).
    pub fn scalar(wall_time: f64, tag: &str, step: i64, value: f64) -> Self {
        let value = summary::Value {
            tag: tag.to_owned(),
            value: Some(summary::value::Value::SimpleValue(value as f32)),
            metadata: None,
        };
        Self::summary_event(wall_time, step, value)
    }

    /// A text-plugin summary: a rank-0 `DT_STRING` tensor holding `markdown`, which
    /// TensorBoard's text dashboard renders as Markdown (what `tf.summary.text` writes).
    pub fn text(wall_time: f64, tag: &str, step: i64, markdown: &str) -> Self {
        let value = summary::Value {
            tag: tag.to_owned(),
            value: Some(summary::value::Value::Tensor(TensorProto {
                dtype: DataType::DtString as i32,
                tensor_shape: Some(TensorShapeProto::default()),
                float_val: Vec::new(),
                string_val: vec![markdown.as_bytes().to_vec()],
            })),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(summary_metadata::PluginData {
                    plugin_name: TEXT_PLUGIN.to_owned(),
                    // TextPluginData { version: 0 } serializes to nothing.
                    content: Vec::new(),
                }),
                data_class: DataClass::Tensor as i32,
                ..Default::default()
            }),
        };
        Self::summary_event(wall_time, step, value)
    }

    fn summary_event(wall_time: f64, step: i64, value: summary::Value) -> Self {
        Event {
            wall_time,
            step,
            what: Some(event::What::Summary(Summary { value: vec![value] })),
        }
    }

    /// The file version, if this is a file's opening event.
    pub fn file_version(&self) -> Option<&str> {
        match &self.what {
            Some(event::What::FileVersion(v)) => Some(v),
            _ => None,
        }
    }

    /// The summary values, if the event carries a summary (else none).
    pub fn values(&self) -> &[summary::Value] {
        match &self.what {
            Some(event::What::Summary(s)) => &s.value,
            _ => &[],
        }
    }

    /// The `simple_value` scalars of this event as `(tag, step, value)`.
    pub fn scalars(&self) -> impl Iterator<Item = (&str, i64, f32)> {
        self.values().iter().filter_map(move |v| match v.value {
            Some(summary::value::Value::SimpleValue(x)) => Some((v.tag.as_str(), self.step, x)),
            _ => None,
        })
    }

    /// The text summaries of this event (rank-0 or one-element `DT_STRING` tensors) as
    /// `(tag, step, text)`; invalid UTF-8 is replaced by U+FFFD.
    pub fn texts(&self) -> impl Iterator<Item = (&str, i64, Cow<'_, str>)> {
        self.values().iter().filter_map(move |v| match &v.value {
            Some(summary::value::Value::Tensor(t))
                if t.dtype == DataType::DtString as i32 && t.string_val.len() == 1 =>
            {
                Some((
                    v.tag.as_str(),
                    self.step,
                    String::from_utf8_lossy(&t.string_val[0]),
                ))
            }
            _ => None,
        })
    }
}
