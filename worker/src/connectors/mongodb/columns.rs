//! From BSON documents to Arrow columns: the shape of a field inferred from
//! the documents seen (widened as they disagree), and the builders that
//! append raw BSON values to Arrow arrays of that shape.
//!
//! Shapes and their Arrow types (all nullable):
//!
//! | BSON | shape | Arrow |
//! |---|---|---|
//! | Int32, Int64 | `Int` | Int64 |
//! | Double (or Int and Double mixed) | `Float` | Float64 |
//! | String, ObjectId (hex), Symbol, Decimal128 (its decimal text) | `Text` | Utf8 |
//! | Boolean | `Bool` | Boolean |
//! | DateTime | `Timestamp` | Timestamp(ms, "UTC") |
//! | Binary (any subtype) | `Binary` | Binary |
//! | embedded document | `Struct` (union of the fields seen) | Struct |
//! | array | `List` (of the elements' merged shape) | List |
//! | anything else, or values that disagree | `Json` | Utf8, relaxed Extended JSON |
//!
//! Null and undefined fit every shape. A field only ever null is Utf8, as
//! are the elements of arrays only ever empty. An embedded document without
//! fields, or with more than [`MAX_STRUCT_FIELDS`], and anything nested
//! deeper than [`MAX_DEPTH`], is JSON text.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListArray, StringBuilder,
    StructArray, TimestampMillisecondBuilder,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use mongodb::bson::{Bson, RawBsonRef, RawDocument};

/// Fields an embedded document may have as a struct; more become JSON text.
pub(crate) const MAX_STRUCT_FIELDS: usize = 256;

/// Nesting levels kept as structs and lists; deeper values are JSON text.
pub(crate) const MAX_DEPTH: usize = 16;

/// What the values of one field look like so far.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// Only nulls (or nothing) seen.
    Null,
    Bool,
    Int,
    Float,
    Text,
    Timestamp,
    Binary,
    Struct(Vec<(String, Shape)>),
    List(Box<Shape>),
    Json,
}

/// A value that does not fit the column it was written to (or a field the
/// columns do not have): the columns must be widened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Misfit;

/// A document the server sent could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub String);

impl From<mongodb::bson::raw::Error> for Malformed {
    fn from(error: mongodb::bson::raw::Error) -> Self {
        Malformed(error.to_string())
    }
}

impl Shape {
    /// Widens this shape so that `value` fits it.
    pub(crate) fn absorb(&mut self, value: RawBsonRef<'_>, depth: usize) -> Result<(), Malformed> {
        use RawBsonRef as B;
        match (&mut *self, value) {
            (_, B::Null | B::Undefined) | (Shape::Json, _) => {}
            (Shape::Null, _) => {
                *self = Shape::fresh(value, depth);
                if matches!(self, Shape::Struct(_) | Shape::List(_)) {
                    self.absorb(value, depth)?;
                }
            }
            (Shape::Bool, B::Boolean(_))
            | (Shape::Int, B::Int32(_) | B::Int64(_))
            | (Shape::Float, B::Int32(_) | B::Int64(_) | B::Double(_))
            | (Shape::Text, B::String(_) | B::ObjectId(_) | B::Symbol(_) | B::Decimal128(_))
            | (Shape::Timestamp, B::DateTime(_))
            | (Shape::Binary, B::Binary(_)) => {}
            (Shape::Int, B::Double(_)) => *self = Shape::Float,
            (Shape::Struct(fields), B::Document(document)) => {
                if depth >= MAX_DEPTH {
                    *self = Shape::Json;
                    return Ok(());
                }
                for element in document {
                    let (key, value) = element?;
                    let index = match fields.iter().position(|(name, _)| name == key) {
                        Some(index) => index,
                        None if fields.len() < MAX_STRUCT_FIELDS => {
                            fields.push((key.to_owned(), Shape::Null));
                            fields.len() - 1
                        }
                        None => {
                            *self = Shape::Json;
                            return Ok(());
                        }
                    };
                    fields[index].1.absorb(value, depth + 1)?;
                }
            }
            (Shape::List(element), B::Array(array)) => {
                if depth >= MAX_DEPTH {
                    *self = Shape::Json;
                    return Ok(());
                }
                for value in array {
                    element.absorb(value?, depth + 1)?;
                }
            }
            _ => *self = Shape::Json,
        }
        Ok(())
    }

    /// The shape of `value` alone, before its contents are absorbed.
    fn fresh(value: RawBsonRef<'_>, depth: usize) -> Shape {
        use RawBsonRef as B;
        match value {
            B::Null | B::Undefined => Shape::Null,
            B::Boolean(_) => Shape::Bool,
            B::Int32(_) | B::Int64(_) => Shape::Int,
            B::Double(_) => Shape::Float,
            B::String(_) | B::ObjectId(_) | B::Symbol(_) | B::Decimal128(_) => Shape::Text,
            B::DateTime(_) => Shape::Timestamp,
            B::Binary(_) => Shape::Binary,
            B::Document(_) if depth < MAX_DEPTH => Shape::Struct(Vec::new()),
            B::Array(_) if depth < MAX_DEPTH => Shape::List(Box::new(Shape::Null)),
            _ => Shape::Json,
        }
    }

    /// The shape as it is written: empty structs are JSON text, shapes
    /// that saw only nulls are text.
    pub(crate) fn settled(&self) -> Shape {
        match self {
            Shape::Null => Shape::Text,
            Shape::Struct(fields) if fields.is_empty() => Shape::Json,
            Shape::Struct(fields) => Shape::Struct(
                fields
                    .iter()
                    .map(|(name, shape)| (name.clone(), shape.settled()))
                    .collect(),
            ),
            Shape::List(element) => Shape::List(Box::new(element.settled())),
            other => other.clone(),
        }
    }

    /// The Arrow type of a settled shape.
    pub(crate) fn data_type(&self) -> DataType {
        match self {
            Shape::Bool => DataType::Boolean,
            Shape::Int => DataType::Int64,
            Shape::Float => DataType::Float64,
            Shape::Null | Shape::Text | Shape::Json => DataType::Utf8,
            Shape::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            Shape::Binary => DataType::Binary,
            Shape::Struct(fields) => DataType::Struct(struct_fields(fields)),
            Shape::List(element) => DataType::List(Arc::new(list_item(element))),
        }
    }
}

fn struct_fields(fields: &[(String, Shape)]) -> Fields {
    fields
        .iter()
        .map(|(name, shape)| Field::new(name, shape.data_type(), true))
        .collect()
}

fn list_item(element: &Shape) -> Field {
    Field::new("item", element.data_type(), true)
}

/// The builder of one column (or nested field) of a settled shape.
pub(crate) enum Column {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Json(StringBuilder),
    Timestamp(TimestampMillisecondBuilder),
    Binary(BinaryBuilder),
    Struct(StructColumn),
    List(ListColumn),
}

pub(crate) struct StructColumn {
    fields: Fields,
    names: Vec<String>,
    children: Vec<Column>,
    validity: NullBufferBuilder,
    len: usize,
}

pub(crate) struct ListColumn {
    field: Arc<Field>,
    offsets: Vec<i32>,
    validity: NullBufferBuilder,
    child: Box<Column>,
}

impl Column {
    /// An empty builder for a settled shape.
    pub(crate) fn new(shape: &Shape) -> Column {
        match shape {
            Shape::Bool => Column::Bool(BooleanBuilder::new()),
            Shape::Int => Column::Int(Int64Builder::new()),
            Shape::Float => Column::Float(Float64Builder::new()),
            Shape::Null | Shape::Text => Column::Text(StringBuilder::new()),
            Shape::Json => Column::Json(StringBuilder::new()),
            Shape::Timestamp => Column::Timestamp(TimestampMillisecondBuilder::new().with_timezone("UTC")),
            Shape::Binary => Column::Binary(BinaryBuilder::new()),
            Shape::Struct(fields) => Column::Struct(StructColumn {
                fields: struct_fields(fields),
                names: fields.iter().map(|(name, _)| name.clone()).collect(),
                children: fields.iter().map(|(_, shape)| Column::new(shape)).collect(),
                validity: NullBufferBuilder::new(0),
                len: 0,
            }),
            Shape::List(element) => Column::List(ListColumn {
                field: Arc::new(list_item(element)),
                offsets: vec![0],
                validity: NullBufferBuilder::new(0),
                child: Box::new(Column::new(element)),
            }),
        }
    }

    /// Values appended so far.
    pub(crate) fn len(&self) -> usize {
        use arrow::array::ArrayBuilder;
        match self {
            Column::Bool(b) => b.len(),
            Column::Int(b) => b.len(),
            Column::Float(b) => b.len(),
            Column::Text(b) | Column::Json(b) => b.len(),
            Column::Timestamp(b) => b.len(),
            Column::Binary(b) => b.len(),
            Column::Struct(s) => s.len,
            Column::List(l) => l.offsets.len() - 1,
        }
    }

    pub(crate) fn append_null(&mut self) {
        match self {
            Column::Bool(b) => b.append_null(),
            Column::Int(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
            Column::Text(b) | Column::Json(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
            Column::Binary(b) => b.append_null(),
            Column::Struct(s) => {
                for child in &mut s.children {
                    child.append_null();
                }
                s.validity.append_null();
                s.len += 1;
            }
            Column::List(l) => {
                let end = l.offsets.last().copied().unwrap_or(0);
                l.offsets.push(end);
                l.validity.append_null();
            }
        }
    }

    /// Appends `value`; `Err(Misfit)` when it does not fit this column
    /// (the builder is then left part-written and must be dropped).
    pub(crate) fn append(&mut self, value: RawBsonRef<'_>) -> Result<(), Appended> {
        use RawBsonRef as B;
        match (self, value) {
            (column, B::Null | B::Undefined) => column.append_null(),
            (Column::Bool(b), B::Boolean(v)) => b.append_value(v),
            (Column::Int(b), B::Int32(v)) => b.append_value(i64::from(v)),
            (Column::Int(b), B::Int64(v)) => b.append_value(v),
            (Column::Float(b), B::Double(v)) => b.append_value(v),
            (Column::Float(b), B::Int32(v)) => b.append_value(f64::from(v)),
            // Precision beyond 2^53 is lost, as in any int-and-double column.
            #[allow(clippy::cast_precision_loss)]
            (Column::Float(b), B::Int64(v)) => b.append_value(v as f64),
            (Column::Text(b), B::String(v) | B::Symbol(v)) => b.append_value(v),
            (Column::Text(b), B::ObjectId(v)) => b.append_value(hex(&v.bytes()).as_str()),
            (Column::Text(b), B::Decimal128(v)) => b.append_value(v.to_string()),
            (Column::Json(b), value) => b.append_value(json_text(value)?),
            (Column::Timestamp(b), B::DateTime(v)) => b.append_value(v.timestamp_millis()),
            (Column::Binary(b), B::Binary(v)) => b.append_value(v.bytes),
            (Column::Struct(s), B::Document(document)) => s.append(document)?,
            (Column::List(l), B::Array(array)) => {
                for value in array {
                    l.child.append(value?)?;
                }
                let end = i32::try_from(l.child.len())
                    .map_err(|_| Appended::Malformed(Malformed("an array batch is too long".into())))?;
                l.offsets.push(end);
                l.validity.append_non_null();
            }
            _ => return Err(Appended::Misfit(Misfit)),
        }
        Ok(())
    }

    /// The values appended so far as an array; the builder starts over.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Int(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Text(b) | Column::Json(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::Binary(b) => Arc::new(b.finish()),
            Column::Struct(s) => {
                let arrays = s.children.iter_mut().map(Column::finish).collect();
                s.len = 0;
                Arc::new(StructArray::new(s.fields.clone(), arrays, s.validity.finish()))
            }
            Column::List(l) => {
                let offsets = std::mem::replace(&mut l.offsets, vec![0]);
                let values = l.child.finish();
                Arc::new(ListArray::new(
                    l.field.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    values,
                    l.validity.finish(),
                ))
            }
        }
    }
}

/// Why a value could not be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Appended {
    Misfit(Misfit),
    Malformed(Malformed),
}

impl From<Malformed> for Appended {
    fn from(error: Malformed) -> Self {
        Appended::Malformed(error)
    }
}

impl From<mongodb::bson::raw::Error> for Appended {
    fn from(error: mongodb::bson::raw::Error) -> Self {
        Appended::Malformed(error.into())
    }
}

impl StructColumn {
    fn append(&mut self, document: &RawDocument) -> Result<(), Appended> {
        let row = self.len;
        let mut hint = 0;
        for element in document {
            let (key, value) = element?;
            let index = find(&self.names, key, hint).ok_or(Appended::Misfit(Misfit))?;
            hint = index + 1;
            let child = &mut self.children[index];
            if child.len() > row {
                // A repeated key: the first value wins.
                continue;
            }
            child.append(value)?;
        }
        for child in &mut self.children {
            if child.len() == row {
                child.append_null();
            }
        }
        self.validity.append_non_null();
        self.len += 1;
        Ok(())
    }
}

/// The index of `key` in `names`, trying `hint` first (documents of a
/// collection usually keep their fields in one order).
pub(crate) fn find(names: &[String], key: &str, hint: usize) -> Option<usize> {
    match names.get(hint) {
        Some(name) if name == key => Some(hint),
        _ => names.iter().position(|name| name == key),
    }
}

/// `value` as relaxed Extended JSON text.
pub(crate) fn json_text(value: RawBsonRef<'_>) -> Result<String, Malformed> {
    let bson = Bson::try_from(value).map_err(|error| Malformed(error.to_string()))?;
    serde_json::to_string(&bson.into_relaxed_extjson()).map_err(|error| Malformed(error.to_string()))
}

/// Lowercase hex of an ObjectId's 12 bytes.
fn hex(bytes: &[u8; 12]) -> HexId {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 24];
    for (i, byte) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
    HexId(out)
}

struct HexId([u8; 24]);

impl HexId {
    fn as_str(&self) -> &str {
        // Only ASCII hex digits were written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};
    use mongodb::bson::{Binary, DateTime, Decimal128, doc, oid::ObjectId, spec::BinarySubtype};

    fn raw(document: mongodb::bson::Document) -> mongodb::bson::RawDocumentBuf {
        mongodb::bson::RawDocumentBuf::from_document(&document).expect("raw")
    }

    fn shape_of(documents: &[mongodb::bson::Document], field: &str) -> Shape {
        let mut shape = Shape::Null;
        for document in documents {
            let raw = raw(document.clone());
            if let Some(value) = raw.get(field).expect("readable") {
                shape.absorb(value, 0).expect("absorbed");
            }
        }
        shape.settled()
    }

    #[test]
    fn shapes_widen_int_to_float_and_disagreements_to_json() {
        assert_eq!(shape_of(&[doc! {"a": 1}, doc! {"a": 2_i64}], "a"), Shape::Int);
        assert_eq!(shape_of(&[doc! {"a": 1}, doc! {"a": 2.5}], "a"), Shape::Float);
        assert_eq!(shape_of(&[doc! {"a": 1}, doc! {"a": "x"}], "a"), Shape::Json);
        assert_eq!(shape_of(&[doc! {"a": null}, doc! {"a": true}], "a"), Shape::Bool);
        assert_eq!(shape_of(&[doc! {"a": null}], "a"), Shape::Text);
        assert_eq!(
            shape_of(&[doc! {"a": ObjectId::new()}, doc! {"a": "text"}], "a"),
            Shape::Text
        );
        assert_eq!(shape_of(&[doc! {"a": {}}], "a"), Shape::Json);
        assert_eq!(
            shape_of(&[doc! {"a": [1, "x"]}], "a"),
            Shape::List(Box::new(Shape::Json))
        );
        assert_eq!(
            shape_of(&[doc! {"a": []}], "a"),
            Shape::List(Box::new(Shape::Text))
        );
        assert_eq!(
            shape_of(&[doc! {"a": {"x": 1}}, doc! {"a": {"y": "s", "x": 2.5}}], "a"),
            Shape::Struct(vec![("x".into(), Shape::Float), ("y".into(), Shape::Text)])
        );
        assert_eq!(
            shape_of(&[doc! {"a": {"x": 1}}, doc! {"a": [1]}], "a"),
            Shape::Json
        );
    }

    #[test]
    fn deep_or_wide_documents_become_json() {
        let mut deep = doc! {"leaf": 1};
        for _ in 0..(MAX_DEPTH + 2) {
            deep = doc! {"d": deep};
        }
        let mut shape = Shape::Null;
        shape
            .absorb(RawBsonRef::Document(&raw(deep)), 0)
            .expect("absorbed");
        let mut level = &shape;
        let mut depth = 0;
        while let Shape::Struct(fields) = level {
            level = &fields[0].1;
            depth += 1;
        }
        assert_eq!((level, depth), (&Shape::Json, MAX_DEPTH));
        let mut wide = mongodb::bson::Document::new();
        for i in 0..=MAX_STRUCT_FIELDS {
            wide.insert(format!("f{i}"), i as i64);
        }
        let mut shape = Shape::Null;
        shape
            .absorb(RawBsonRef::Document(&raw(wide)), 0)
            .expect("absorbed");
        assert_eq!(shape, Shape::Json);
    }

    #[test]
    fn columns_append_every_scalar_exactly() {
        let id = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").expect("oid");
        let decimal: Decimal128 = "12345.6789".parse().expect("decimal");
        let when = DateTime::from_millis(1_700_000_000_123);
        let document = raw(doc! {
            "id": id, "dec": decimal, "when": when, "big": i64::MAX, "small": -5,
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
            "ts": mongodb::bson::Timestamp { time: 7, increment: 9 },
        });
        let get = |key: &str| document.get(key).expect("readable").expect("present");
        let mut text = Column::new(&Shape::Text);
        text.append(get("id")).expect("fits");
        text.append(get("dec")).expect("fits");
        let text = text.finish();
        let text = text.as_string::<i32>();
        assert_eq!(
            (text.value(0), text.value(1)),
            ("65a1b2c3d4e5f60718293a4b", "12345.6789")
        );
        let mut ints = Column::new(&Shape::Int);
        ints.append(get("big")).expect("fits");
        ints.append(get("small")).expect("fits");
        assert!(ints.append(get("dec")).is_err());
        let ints = ints.finish();
        assert_eq!(ints.as_primitive::<Int64Type>().values(), &[i64::MAX, -5][..]);
        let mut times = Column::new(&Shape::Timestamp);
        times.append(get("when")).expect("fits");
        let times = times.finish();
        assert_eq!(times.data_type(), &Shape::Timestamp.data_type());
        assert_eq!(
            times.as_primitive::<TimestampMillisecondType>().value(0),
            1_700_000_000_123
        );
        let mut json = Column::new(&Shape::Json);
        json.append(get("ts")).expect("fits");
        json.append(get("small")).expect("fits");
        json.append(RawBsonRef::Null).expect("fits");
        let json = json.finish();
        let json = json.as_string::<i32>();
        assert_eq!(json.value(0), r#"{"$timestamp":{"t":7,"i":9}}"#);
        assert_eq!(json.value(1), "-5");
        assert!(json.is_null(2));
        let mut binary = Column::new(&Shape::Binary);
        binary.append(get("bin")).expect("fits");
        assert_eq!(binary.finish().as_binary::<i32>().value(0), &[0, 1, 255]);
    }

    #[test]
    fn structs_and_lists_fill_missing_fields_with_nulls_and_refuse_new_ones() {
        let shape = Shape::Struct(vec![
            ("a".into(), Shape::Int),
            ("tags".into(), Shape::List(Box::new(Shape::Text))),
        ]);
        let mut column = Column::new(&shape);
        // A repeated key (BSON allows them): the first value wins.
        let mut repeated = mongodb::bson::RawDocumentBuf::new();
        repeated.append("a", 3);
        repeated.append("a", 4);
        repeated.append("tags", mongodb::bson::RawArrayBuf::new());
        let mut last = mongodb::bson::RawDocumentBuf::new();
        last.append("v", repeated);
        for document in [
            raw(doc! {"v": {"tags": ["x", "y"], "a": 1}}),
            raw(doc! {"v": {"a": 2}}),
            raw(doc! {"v": null}),
            last,
        ] {
            column
                .append(document.get("v").expect("readable").expect("present"))
                .expect("fits");
        }
        let array = column.finish();
        assert_eq!(array.data_type(), &shape.data_type());
        let array = array.as_struct();
        assert_eq!(array.len(), 4);
        assert!(array.is_null(2));
        let a = array.column(0).as_primitive::<Int64Type>();
        assert_eq!((a.value(0), a.value(1), a.value(3)), (1, 2, 3));
        let tags = array.column(1).as_list::<i32>();
        assert_eq!(tags.value_offsets(), &[0, 2, 2, 2, 2]);
        assert!(tags.is_null(1) && tags.is_valid(3));
        let extra = raw(doc! {"v": {"a": 1, "b": 2}});
        let mut column = Column::new(&shape);
        assert_eq!(
            column.append(extra.get("v").expect("readable").expect("present")),
            Err(Appended::Misfit(Misfit))
        );
    }
}
