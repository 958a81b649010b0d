//! Reading back the CSV that Ferry's result endpoint writes.

/// RFC 4180 records; an unquoted empty field is None (null).
pub fn parse(text: &str) -> Vec<Vec<Option<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut field = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        break;
                    }
                } else {
                    field.push(c);
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' || c == '\n' {
                break;
            }
            field.push(c);
            chars.next();
        }
        record.push((quoted || !field.is_empty()).then_some(field));
        if chars.next() != Some(',') {
            records.push(std::mem::take(&mut record));
        }
    }
    records
}
