//! Arrow-side helpers shared by the drivers: a column builder for the
//! drivers that decode typed values (MySQL, SQLite), decimal parsing with
//! the documented rounding, and the epoch constants.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, TimeUnit};

/// Microseconds in a day: the exclusive upper bound of `Time64(µs)`.
pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Precision and scale used when a decimal's own are unknown (PostgreSQL
/// `numeric` without a type modifier, MySQL expressions): 28 integer and 10
/// fractional digits; further fractional digits are rounded half away from
/// zero.
pub(crate) const UNCONSTRAINED_DECIMAL: (u8, i8) = (38, 10);

/// Largest precision Decimal128 holds.
pub(crate) const MAX_DECIMAL128_PRECISION: u8 = 38;

/// 10^p for p in 0..=38.
pub(crate) fn pow10(p: u32) -> i128 {
    10i128.pow(p)
}

/// A typed Arrow builder for drivers that decode values themselves.
pub(crate) enum Builder {
    Boolean(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt8(UInt8Builder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date32(Date32Builder),
    Time64(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    /// A builder for `data_type`; `None` for types no driver produces.
    pub(crate) fn new(data_type: &DataType) -> Option<Builder> {
        Some(match data_type {
            DataType::Boolean => Builder::Boolean(BooleanBuilder::new()),
            DataType::Int8 => Builder::Int8(Int8Builder::new()),
            DataType::Int16 => Builder::Int16(Int16Builder::new()),
            DataType::Int32 => Builder::Int32(Int32Builder::new()),
            DataType::Int64 => Builder::Int64(Int64Builder::new()),
            DataType::UInt8 => Builder::UInt8(UInt8Builder::new()),
            DataType::UInt16 => Builder::UInt16(UInt16Builder::new()),
            DataType::UInt32 => Builder::UInt32(UInt32Builder::new()),
            DataType::UInt64 => Builder::UInt64(UInt64Builder::new()),
            DataType::Float32 => Builder::Float32(Float32Builder::new()),
            DataType::Float64 => Builder::Float64(Float64Builder::new()),
            DataType::Decimal128(precision, scale) => Builder::Decimal {
                builder: Decimal128Builder::new()
                    .with_precision_and_scale(*precision, *scale)
                    .ok()?,
                precision: *precision,
                scale: *scale,
            },
            DataType::Utf8 => Builder::Utf8(StringBuilder::new()),
            DataType::Binary => Builder::Binary(BinaryBuilder::new()),
            DataType::Date32 => Builder::Date32(Date32Builder::new()),
            DataType::Time64(TimeUnit::Microsecond) => Builder::Time64(Time64MicrosecondBuilder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, zone) => {
                Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone_opt(zone.clone()))
            }
            _ => return None,
        })
    }

    pub(crate) fn append_null(&mut self) {
        match self {
            Builder::Boolean(b) => b.append_null(),
            Builder::Int8(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::UInt8(b) => b.append_null(),
            Builder::UInt16(b) => b.append_null(),
            Builder::UInt32(b) => b.append_null(),
            Builder::UInt64(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Decimal { builder, .. } => builder.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::Date32(b) => b.append_null(),
            Builder::Time64(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
        }
    }

    /// The values so far as an array; the builder starts over empty and
    /// keeps its type.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Boolean(b) => Arc::new(b.finish()),
            Builder::Int8(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::UInt8(b) => Arc::new(b.finish()),
            Builder::UInt16(b) => Arc::new(b.finish()),
            Builder::UInt32(b) => Arc::new(b.finish()),
            Builder::UInt64(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Decimal { builder, .. } => Arc::new(builder.finish()),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Date32(b) => Arc::new(b.finish()),
            Builder::Time64(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// Parses a plain decimal string (`-123.4500`, `.5`, `7`, optionally with
/// an exponent `1.5e3`) into a Decimal128 value of `scale`, rounding extra
/// fractional digits half away from zero. `Err` names what is wrong.
pub(crate) fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let text = text.trim();
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => {
            let exponent: i32 = body[at + 1..]
                .parse()
                .map_err(|_| format!("'{text}' is not a decimal number"))?;
            (&body[..at], exponent)
        }
        None => (body, 0),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if integer.is_empty() && fraction.is_empty()
        || !integer
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!("'{text}' is not a decimal number"));
    }
    // digits = integer ++ fraction, and the value is digits × 10^(exponent − fraction.len()).
    // We want value × 10^scale = digits × 10^shift.
    let shift = i64::from(scale) + i64::from(exponent) - fraction.len() as i64;
    let overflow = || format!("{text} does not fit a decimal({precision},{scale})");
    let mut acc: i128 = 0;
    let mut round_up = false;
    let digits: Vec<u8> = integer
        .bytes()
        .chain(fraction.bytes())
        .map(|b| b - b'0')
        .collect();
    let keep = if shift >= 0 {
        digits.len()
    } else {
        digits.len().saturating_sub(shift.unsigned_abs() as usize)
    };
    for (i, digit) in digits.iter().enumerate() {
        if i < keep {
            acc = acc
                .checked_mul(10)
                .and_then(|a| a.checked_add(i128::from(*digit)))
                .ok_or_else(overflow)?;
        } else {
            round_up = *digit >= 5;
            break;
        }
    }
    if shift > 0 {
        let factor = u32::try_from(shift)
            .ok()
            .filter(|s| *s <= 38)
            .map(pow10)
            .ok_or_else(overflow)?;
        acc = acc.checked_mul(factor).ok_or_else(overflow)?;
    }
    if round_up {
        acc += 1;
    }
    if precision <= MAX_DECIMAL128_PRECISION && acc >= pow10(u32::from(precision)) {
        return Err(overflow());
    }
    Ok(if negative { -acc } else { acc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_at_the_target_scale_with_rounding() {
        assert_eq!(parse_decimal("123.45", 10, 2), Ok(12345));
        assert_eq!(parse_decimal("-123.45", 10, 2), Ok(-12345));
        assert_eq!(parse_decimal("1.5", 10, 3), Ok(1500));
        assert_eq!(parse_decimal("2.345", 10, 2), Ok(235));
        assert_eq!(parse_decimal("-2.345", 10, 2), Ok(-235));
        assert_eq!(parse_decimal("2.344", 10, 2), Ok(234));
        assert_eq!(parse_decimal(".5", 10, 0), Ok(1));
        assert_eq!(parse_decimal("7", 10, 0), Ok(7));
        assert_eq!(parse_decimal("1.5e3", 10, 1), Ok(15000));
        assert_eq!(parse_decimal("0.000", 10, 3), Ok(0));
        assert!(parse_decimal("12345", 4, 0).is_err());
        assert!(parse_decimal("abc", 10, 0).is_err());
        assert!(parse_decimal("", 10, 0).is_err());
        assert_eq!(
            parse_decimal("99999999999999999999999999999999999999", 38, 0),
            Ok(pow10(38) - 1)
        );
    }
}
