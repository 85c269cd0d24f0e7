//! The few fields of an MK.IO event's `data` that normalization reads, deserialized straight
//! from the JSON text and borrowed from it. Everything else in `data` is skipped without being
//! built, and the values a resource row keeps are written back as the text they arrived as.
//!
//! Reading is lenient in shape, as MKIO.md asks (fields may be missing, renamed or of another
//! type): a field of an unexpected type reads as absent, an object where a list belongs (or the
//! reverse) as empty. Only text that is not JSON, or an object that repeats a key, fails.

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A JSON value kept as its text; `None` when absent or `null`.
pub type Raw<'a> = Option<&'a RawValue>;

/// The string a raw value holds, when it is a JSON string.
pub fn text<'a>(raw: Raw<'a>) -> Option<Cow<'a, str>> {
    let raw = raw?.get();
    if !raw.starts_with('"') {
        return None;
    }
    // Borrowed unless the string has escapes to undo.
    match serde_json::from_str::<&str>(raw) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
    }
}

/// An object of type `T`; any other JSON value reads as `T::default()`.
#[derive(Default)]
pub struct Object<T>(pub T);

impl<T: Serialize> Serialize for Object<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A list of `T`; any other JSON value reads as empty.
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Consumes whatever value a visitor was handed, for shapes a lenient field ignores.
macro_rules! ignore_other_shapes {
    ($out:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
    };
}

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Lenient<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for Lenient<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Object(T::default()))
            }
            ignore_other_shapes!(Object(T::default()));
        }
        deserializer.deserialize_any(Lenient(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Lenient<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Lenient<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(List)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(List(Vec::new()))
            }
            ignore_other_shapes!(List(Vec::new()));
        }
        deserializer.deserialize_any(Lenient(PhantomData))
    }
}

/// An event's `data` as normalization reads it.
#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DataView<'a> {
    #[serde(borrow)]
    pub project_name: Raw<'a>,
    #[serde(borrow)]
    pub state: Raw<'a>,
    #[serde(borrow)]
    pub previous_state: Raw<'a>,
    #[serde(borrow)]
    pub resource: Object<ResourceView<'a>>,
}

impl<'a> DataView<'a> {
    /// Reads `data` (JSON text). `None` when it is not JSON or an object in it repeats a key.
    pub fn read(data: &'a str) -> Option<Self> {
        if !data.trim_start().starts_with('{') {
            return Some(Self::default());
        }
        serde_json::from_str(data).ok()
    }
}

/// A CloudEvent's `data` read as [`DataView`] while the envelope around it is parsed: the view
/// of an object, and whether it was one (any other value reads as the empty view). A repeated
/// key among the fields the view reads fails the parse, as in [`DataView::read`].
#[derive(Default)]
pub struct DataField<'a> {
    pub is_object: bool,
    pub view: DataView<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for DataField<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shape<'a>(PhantomData<DataView<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for Shape<'a> {
            type Value = DataField<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let view = DataView::deserialize(MapAccessDeserializer::new(map))?;
                Ok(DataField {
                    is_object: true,
                    view,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(DataField::default())
            }
            ignore_other_shapes!(DataField::default());
        }
        deserializer.deserialize_any(Shape(PhantomData))
    }
}

#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub struct ResourceView<'a> {
    #[serde(borrow)]
    pub properties: Object<PropertiesView<'a>>,
    #[serde(borrow)]
    pub status: Object<StatusView<'a>>,
    #[serde(borrow)]
    pub spec: Object<SpecView<'a>>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PropertiesView<'a> {
    #[serde(borrow)]
    pub state: Raw<'a>,
    #[serde(borrow)]
    pub resource_state: Raw<'a>,
    #[serde(borrow)]
    pub outputs: List<Object<OutputView<'a>>>,
    #[serde(borrow)]
    pub error: Raw<'a>,
    #[serde(borrow)]
    pub correlation_data: Raw<'a>,
    #[serde(borrow)]
    pub priority: Raw<'a>,
    #[serde(borrow)]
    pub created: Raw<'a>,
    #[serde(borrow)]
    pub last_modified: Raw<'a>,
    #[serde(borrow)]
    pub start_time: Raw<'a>,
    #[serde(borrow)]
    pub end_time: Raw<'a>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub struct StatusView<'a> {
    #[serde(borrow)]
    pub state: Raw<'a>,
    #[serde(borrow)]
    pub info: Raw<'a>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SpecView<'a> {
    #[serde(borrow)]
    pub state: Raw<'a>,
    #[serde(borrow, rename = "type")]
    pub operation_type: Raw<'a>,
    #[serde(borrow)]
    pub correlation_data: Raw<'a>,
}

/// One job output, read and written back as a resource row keeps it.
#[derive(Default, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct OutputView<'a> {
    #[serde(borrow)]
    pub label: Raw<'a>,
    #[serde(borrow, rename(deserialize = "assetName"))]
    pub asset_name: Raw<'a>,
    #[serde(borrow)]
    pub state: Raw<'a>,
    #[serde(borrow)]
    pub progress: Raw<'a>,
    #[serde(borrow, rename(deserialize = "startTime"))]
    pub start_time: Raw<'a>,
    #[serde(borrow, rename(deserialize = "endTime"))]
    pub end_time: Raw<'a>,
    #[serde(borrow)]
    pub error: Raw<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_another_shape_read_as_absent() {
        let data = r#"{"state": 5, "previousState": "Queued", "resource": [1, {"a": 2}],
                       "other": {"deep": [[[{}]]]}}"#;
        let view = DataView::read(data).expect("json");
        assert_eq!(text(view.state), None);
        assert_eq!(text(view.previous_state).as_deref(), Some("Queued"));
        assert!(view.resource.0.properties.0.outputs.0.is_empty());

        let data = r#"{"resource": {"properties": {"outputs": {"a": 1}, "state": "Finished",
                       "error": {"code": "X"}}}}"#;
        let view = DataView::read(data).expect("json");
        let props = view.resource.0.properties.0;
        assert!(props.outputs.0.is_empty());
        assert_eq!(text(props.state).as_deref(), Some("Finished"));
        assert_eq!(props.error.map(RawValue::get), Some(r#"{"code": "X"}"#));
    }

    #[test]
    fn strings_with_escapes_and_repeated_keys() {
        let view = DataView::read(r#"{"state": "Fin\u0069shed"}"#).expect("json");
        assert_eq!(text(view.state).as_deref(), Some("Finished"));
        assert!(DataView::read(r#"{"state": "a", "state": "b"}"#).is_none());
        assert!(DataView::read("{").is_none());
        assert!(text(DataView::read("\"text\"").expect("not an object").state).is_none());
    }
}
