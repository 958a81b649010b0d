//! Every column exports: PostgreSQL types without a native mapping arrive
//! as the server's own text in the same single read, the native ones
//! (inet, cidr, macaddr, money, enums, domains, arrays) keep their values,
//! and numerics no decimal can hold become exact text. Each exported value
//! is checked against what the server itself prints for it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, DecimalType, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;
use ferry_shared::domain::params::ParamValue;
use ferry_worker::extract::{ExtractOptions, ReadPath};
use sqlx::Row;

use crate::helpers::*;

/// One exported cell as text: a scalar, or a list of element texts.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Scalar(Option<String>),
    List(Option<Vec<Option<String>>>),
}

/// `value` at `row` the way the comparison query prints it: integers,
/// booleans (`t`/`f`), decimals without trailing zeros, floats by value,
/// dates as days and times as microseconds since the epoch, bytes as
/// `\x…`, text as itself.
fn render(array: &ArrayRef, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Boolean => (if array.as_boolean().value(row) { "t" } else { "f" }).to_owned(),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => {
            let value = array.as_primitive::<Decimal128Type>().value(row);
            decimal_text(&Decimal128Type::format_decimal(value, 38, *scale))
        }
        DataType::Date32 => array.as_primitive::<Date32Type>().value(row).to_string(),
        DataType::Time64(TimeUnit::Microsecond) => array
            .as_primitive::<Time64MicrosecondType>()
            .value(row)
            .to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .to_string(),
        DataType::Binary => {
            let bytes = array.as_binary::<i32>().value(row);
            format!(
                "\\x{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        }
        other => panic!("no rendering for {other}"),
    })
}

fn float(value: f64) -> String {
    format!("{value:?}")
}

/// A decimal's text without trailing fractional zeros (`1.50` → `1.5`).
fn decimal_text(text: &str) -> String {
    if text.contains('.') {
        let trimmed = text.trim_end_matches('0').trim_end_matches('.');
        if trimmed == "-0" {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        }
    } else {
        text.to_owned()
    }
}

/// The server's text of one value of `data_type` in `expr`, in the form
/// `render` writes: the type's own output function (`concat`), numerics
/// as numeric text, dates and times as epoch counts.
fn pg_text(expr: &str, data_type: &DataType) -> String {
    match data_type {
        DataType::Date32 => format!("({expr} - date '1970-01-01')::text"),
        DataType::Time64(_) | DataType::Timestamp(_, _) => {
            format!("(extract(epoch from {expr}) * 1000000)::int8::text")
        }
        DataType::Decimal128(_, _) => format!("{expr}::numeric::text"),
        // num_nulls: a composite whose fields are all null is not null.
        _ => format!("CASE WHEN num_nulls({expr}) = 1 THEN NULL ELSE concat({expr}) END"),
    }
}

/// Normalises the server's text like `render` does for `data_type`.
fn normalise(text: Option<String>, data_type: &DataType) -> Option<String> {
    let text = text?;
    Some(match data_type {
        DataType::Float32 | DataType::Float64 => {
            let value: f64 = text.parse().unwrap_or_else(|_| panic!("float {text}"));
            match data_type {
                DataType::Float32 => float(f64::from(value as f32)),
                _ => float(value),
            }
        }
        DataType::Decimal128(_, _) => decimal_text(&text),
        _ => text,
    })
}

/// Checks every cell of `batch` (the export of `sql`) against the server's
/// own output for the same query, value for value.
async fn assert_matches_server(pool: &sqlx::PgPool, sql: &str, batch: &RecordBatch) {
    let schema = batch.schema();
    let mut exprs = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let c = format!("c{}", i + 1);
        exprs.push(match field.data_type() {
            DataType::List(item) => format!(
                "CASE WHEN {c} IS NULL THEN NULL ELSE array(SELECT {} FROM unnest({c}) AS u) END",
                // `u` is the element, composite or not.
                pg_text("u", item.data_type())
            ),
            other => pg_text(&c, other),
        });
    }
    let names: Vec<String> = (1..=schema.fields().len()).map(|i| format!("c{i}")).collect();
    let check = format!(
        "SELECT {} FROM (\n{sql}\n) AS q({})",
        exprs.join(", "),
        names.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(check.clone()))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{check}: {e}"));
    assert_eq!(rows.len(), batch.num_rows(), "rows of {sql}");
    for (r, row) in rows.iter().enumerate() {
        for (i, field) in schema.fields().iter().enumerate() {
            let array = batch.column(i);
            let (expected, actual) = match field.data_type() {
                DataType::List(item) => {
                    let server: Option<Vec<Option<String>>> = row.try_get(i).expect("text[]");
                    let expected = server.map(|v| {
                        v.into_iter()
                            .map(|t| normalise(t, item.data_type()))
                            .collect::<Vec<_>>()
                    });
                    let actual = (!array.is_null(r)).then(|| {
                        let values = array.as_list::<i32>().value(r);
                        (0..values.len()).map(|j| render(&values, j)).collect()
                    });
                    (Cell::List(expected), Cell::List(actual))
                }
                data_type => {
                    let server: Option<String> = row.try_get(i).expect("text");
                    (
                        Cell::Scalar(normalise(server, data_type)),
                        Cell::Scalar(render(array, r)),
                    )
                }
            };
            assert_eq!(
                actual,
                expected,
                "row {r}, column {} ({}) of {sql}",
                field.name(),
                field.data_type()
            );
        }
    }
}

/// Exports `sql` through COPY and returns the batch read back.
async fn export(source: &ferry_worker::extract::SqlSource, sql: &str) -> RecordBatch {
    let files = file_target();
    let path = files.target.step_path("exec_every", "step");
    let output = extract(source, &query(sql, vec![]), &files.target, &path)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let (batch, _) = read_parquet(&files.target, &path).await;
    assert_eq!(output.rows as usize, batch.num_rows());
    batch
}

fn data_type_of<'a>(batch: &'a RecordBatch, name: &str) -> &'a DataType {
    batch
        .schema_ref()
        .field_with_name(name)
        .unwrap_or_else(|_| panic!("no column {name}"))
        .data_type()
}

fn utf8_list() -> DataType {
    DataType::List(Arc::new(arrow::datatypes::Field::new_list_field(
        DataType::Utf8,
        true,
    )))
}

#[tokio::test]
async fn catalog_queries_and_void_export_with_the_servers_values() {
    let pg = pg_fixture().await;
    // An idle connection whose pg_stat_activity row stays put.
    let idle = pg.admin_of_database().await;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&idle)
        .await
        .expect("pid");

    let activity = export(&pg.source(), "select * from pg_stat_activity").await;
    assert!(activity.num_rows() >= 1);
    assert_eq!(data_type_of(&activity, "client_addr"), &DataType::Utf8);

    let one = format!("select * from pg_stat_activity where pid = {pid}");
    let batch = export(&pg.source(), &one).await;
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(
        batch.column_by_name("client_addr").map(|c| render(c, 0)),
        Some(Some("127.0.0.1".to_owned()))
    );
    assert_matches_server(&pg.pool, &one, &batch).await;

    let classes = "select * from pg_class order by oid";
    let batch = export(&pg.source(), classes).await;
    assert!(batch.num_rows() > 100);
    assert_eq!(data_type_of(&batch, "relacl"), &utf8_list());
    assert_eq!(data_type_of(&batch, "relpartbound"), &DataType::Utf8);
    assert_matches_server(&pg.pool, classes, &batch).await;

    // Types sqlx cannot look up (pg_node_tree, multiranges), with a
    // parameter: the extended protocol casts them the same way.
    let files = file_target();
    let path = files.target.step_path("exec_every", "bound");
    let bound = query(
        "select c.*, int4multirange(int4range(1, 3), int4range(5, 6)) AS mr from pg_class c \
         where c.oid > $1 and c.relname <> $2 order by c.oid",
        vec![ParamValue::Integer(0), ParamValue::Text("$1 ' -- ;".into())],
    );
    let output = extract(&pg.source(), &bound, &files.target, &path)
        .await
        .expect("bound pg_class");
    assert_eq!(output.read_path, ReadPath::PostgresExtended);
    let (batch, _) = read_parquet(&files.target, &path).await;
    assert_eq!(data_type_of(&batch, "relpartbound"), &DataType::Utf8);
    assert_eq!(
        render(batch.column_by_name("mr").expect("mr"), 0).as_deref(),
        Some("{[1,3),[5,6)}")
    );
    assert!(batch.num_rows() > 100);

    let batch = export(&pg.source(), "select pg_sleep(0)").await;
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(data_type_of(&batch, "pg_sleep"), &DataType::Utf8);
    assert_eq!(render(batch.column(0), 0), Some(String::new()));
}

const ALL_TYPES: &str = r#"
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TYPE pair AS (a int4, b text);
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN address AS inet;
CREATE DOMAIN span AS int4range;
CREATE DOMAIN price AS money;
CREATE TABLE all_types (
    id int4 PRIMARY KEY,
    ip inet, net cidr, mac macaddr, mac8 macaddr8, iv interval, cash money,
    m mood, d_int posint, d_ip address, d_range span, d_cash price,
    a_ip inet[], a_net cidr[], a_mac macaddr[], a_iv interval[], a_cash money[], a_m mood[],
    a_range int4range[], a_comp pair[],
    r_int int4range, r_ts tstzrange, r_num numrange, r_date daterange,
    pt point, ln line, sg lseg, bx box, pth path, pgn polygon, cir circle,
    tsv tsvector, tsq tsquery, b4 bit(4), vb varbit,
    comp pair, ttz timetz, hs hstore, ci citext, x xml,
    xid_ xid, lsn pg_lsn, tid_ tid, reg regclass, regp regproc,
    n_fixed numeric(10,2), n_free numeric, a_n numeric[], n_plain numeric(8,3)
);
INSERT INTO all_types VALUES
 (1, '192.168.0.1', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', '1 year 2 mons 3 days 04:05:06.5',
  '1234.56', 'happy', 7, '::1', '[1,5)', '-0.99',
  '{10.1.2.3/24,NULL,::ffff:1.2.3.4,2001:db8::1/64,::,1::,1:0:0:1:0:0:0:1,fe80::1:0:0:0:1,0:0:1::,::1.2.3.4,1:2:3:4:5:6:7:8}',
  '{10.0.0.0/8,2001:db8::/32,1.2.3.4/32}', '{00:00:00:00:00:00,ff:ff:ff:ff:ff:ff}',
  '{"1 day",NULL,"-00:00:01"}', '{0.01,NULL,-92233720368547758.08}', '{sad,happy}',
  '{"[1,3)",empty,NULL}', '{"(1,x)","(,\"a,b\")"}',
  '[1,10)', '[2024-01-01 00:00:00+00,2024-02-01 00:00:00+00)', '(,1.5]', '[2024-01-01,infinity)',
  '(1,2)', '{1,-1,0}', '[(0,0),(1,1)]', '((0,0),(2,3))', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(0,0),2>',
  'a fat cat sat on a mat', 'fat & rat', B'1010', B'101',
  '(1,"x y")', '12:34:56+02', 'a=>1, "b c"=>NULL', 'MiXeD', '<a>1</a>',
  '42', '16/B374D848', '(0,1)', 'pg_class', 'now',
  'NaN', 'NaN', '{1.5,NaN,Infinity}', '12345.678'),
 (2, '2001:db8::ff00:42:8329', '2001:db8::/48', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00:00:00', '-1 mons -00:00:00.000001',
  '-92233720368547758.08', 'sad', 1, '10.0.0.1/8', 'empty', '92233720368547758.07',
  '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
  'empty', '(,)', '[0,0]', 'empty',
  '(-1.5,1e+300)', '{0,1,0}', '[(1,2),(3,4)]', '((1,1),(1,1))', '((0,0),(1,1))', '((0,0))', '<(1,1),0.5>',
  '', '!a', B'0000', B'',
  '(,)', '00:00:00-14:59', '', '', '',
  '0', '0/0', '(4294967295,65535)', '-', '-',
  '-99999999.99', 'Infinity', '{}', '-0.001'),
 (3, '0.0.0.0/0', '0.0.0.0/0', NULL, NULL, '0', '0', NULL, NULL, NULL, NULL, NULL,
  '{NULL}', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  0, '-Infinity', NULL, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  12.5, 1e40, NULL, NULL);
"#;

fn decimal(precision: u8, scale: i8) -> DataType {
    DataType::Decimal128(precision, scale)
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(arrow::datatypes::Field::new_list_field(item, true)))
}

#[tokio::test]
async fn a_column_of_every_postgres_type_exports_the_servers_values_on_both_paths() {
    let pg = pg_fixture().await;
    pg.exec(ALL_TYPES).await;
    let sql = "SELECT * FROM all_types ORDER BY id";
    let files = file_target();
    let copy_path = files.target.step_path("exec_all", "copy");
    let copy = extract(&pg.source(), &query(sql, vec![]), &files.target, &copy_path)
        .await
        .expect("copy");
    assert_eq!(copy.read_path, ReadPath::PostgresCopy);
    assert_eq!(copy.rows, 4);
    let (batch, _) = read_parquet(&files.target, &copy_path).await;

    for (name, expected) in [
        ("ip", DataType::Utf8),
        ("net", DataType::Utf8),
        ("mac", DataType::Utf8),
        ("mac8", DataType::Utf8),
        ("iv", DataType::Utf8),
        ("cash", decimal(19, 2)),
        ("m", DataType::Utf8),
        ("d_int", DataType::Int32),
        ("d_ip", DataType::Utf8),
        ("d_range", DataType::Utf8),
        ("d_cash", decimal(19, 2)),
        ("a_ip", list_of(DataType::Utf8)),
        ("a_cash", list_of(decimal(19, 2))),
        ("a_iv", list_of(DataType::Utf8)),
        ("a_range", list_of(DataType::Utf8)),
        ("a_comp", list_of(DataType::Utf8)),
        ("r_int", DataType::Utf8),
        ("pt", DataType::Utf8),
        ("tsv", DataType::Utf8),
        ("b4", DataType::Utf8),
        ("comp", DataType::Utf8),
        ("ttz", DataType::Utf8),
        ("hs", DataType::Utf8),
        ("ci", DataType::Utf8),
        ("xid_", DataType::Utf8),
        ("reg", DataType::Utf8),
        // NaN and ±Infinity have no decimal form: those columns are exact
        // text; a column without them stays a decimal.
        ("n_fixed", DataType::Utf8),
        ("n_free", DataType::Utf8),
        ("a_n", list_of(DataType::Utf8)),
        ("n_plain", decimal(8, 3)),
    ] {
        assert_eq!(data_type_of(&batch, name), &expected, "type of {name}");
    }
    assert_matches_server(&pg.pool, sql, &batch).await;
    // inet's own output, not text(inet) (which always adds the mask).
    assert_eq!(render(batch.column(1), 0).as_deref(), Some("192.168.0.1"));
    assert_eq!(render(batch.column(2), 0).as_deref(), Some("10.0.0.0/8"));
    assert_eq!(
        render(batch.column_by_name("n_free").expect("n_free"), 3).as_deref(),
        Some("10000000000000000000000000000000000000000")
    );

    // The parameterised extended protocol and the forced extended protocol
    // cast the same columns and write the same bytes.
    let bound_path = files.target.step_path("exec_all", "bound");
    let bound = query(
        "SELECT * FROM all_types WHERE id > $1 ORDER BY id -- the end",
        vec![ParamValue::Integer(0)],
    );
    let extended = extract(&pg.source(), &bound, &files.target, &bound_path)
        .await
        .expect("extended");
    assert_eq!(extended.read_path, ReadPath::PostgresExtended);
    let forced_path = files.target.step_path("exec_all", "forced");
    let forced = ExtractOptions {
        postgres_copy: false,
        ..ExtractOptions::default()
    };
    extract_with(
        &forced,
        &pg.source(),
        &query(sql, vec![]),
        &files.target,
        &forced_path,
    )
    .await
    .expect("forced");
    let copy_bytes = object_bytes(&files.target, &copy_path).await;
    assert_eq!(copy_bytes, object_bytes(&files.target, &bound_path).await);
    assert_eq!(copy_bytes, object_bytes(&files.target, &forced_path).await);
}

#[tokio::test]
async fn wrapped_queries_keep_duplicate_names_comments_and_quoted_semicolons() {
    let pg = pg_fixture().await;
    let sql = "SELECT interval '1 day' AS a, $$;--$$ AS a, point '(1,2)' AS \"odd \"\"name\", \
               'x' /* ; */ AS b;; -- trailing ; comment\n  ";
    let batch = export(&pg.source(), sql).await;
    let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["a", "a_2", "odd \"name", "b"]);
    let texts: Vec<_> = (0..4).map(|i| render(batch.column(i), 0)).collect();
    assert_eq!(
        texts,
        [Some("1 day"), Some(";--"), Some("(1,2)"), Some("x")].map(|t| t.map(str::to_owned))
    );
}
