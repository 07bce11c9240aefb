//! Byte offsets to `line:column` and to the dotted field path an error names.

use std::ops::Range;

use super::PlanError;

pub(crate) fn located(source: &str, file: &str, span: Range<usize>, field: String, message: String) -> PlanError {
    let (line, column) = line_col(source, span.start);
    PlanError {
        file: file.to_owned(),
        line,
        column,
        field,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted path (`steps[1].iterations`) of the key on the line holding `offset`, for errors
/// that serde reports without a field name. A malformed table header is named as written.
pub(crate) fn field_path_at(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let mut table = String::new();
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut pos = 0;
    for line in source.split_inclusive('\n') {
        pos += line.len();
        let t = line.trim();
        let here = offset < pos || pos == source.len();
        if let Some(inner) = t.strip_prefix("[[") {
            let Some((name, _)) = inner.split_once("]]") else {
                if here {
                    return t.to_owned();
                }
                continue;
            };
            let name = name.trim().to_owned();
            let n = match arrays.iter_mut().find(|(k, _)| *k == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => {
                    arrays.push((name.clone(), 1));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(inner) = t.strip_prefix('[') {
            let Some((name, _)) = inner.split_once(']') else {
                if here {
                    return t.to_owned();
                }
                continue;
            };
            table = name.trim().to_owned();
        } else if here
            && let Some((key, _)) = t.split_once('=')
            && !key.trim().trim_matches('"').is_empty()
        {
            let key = key.trim().trim_matches('"');
            return if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
        }
        if here {
            return if table.is_empty() { "(plan)".to_owned() } else { table };
        }
    }
    "(plan)".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let s = "a = 1\nbb = 2\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 6), (2, 1));
        assert_eq!(line_col(s, 11), (2, 6));
    }
}
