//! One `[[steps]]` table: `name`, `kind` and `timeout` are read here; the rest is the kind's own
//! raw table, deserialized from the span-keeping TOML value so errors point at the right place,
//! then validated by the kind through [`StepCx`].

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{FaultMode, Loc, PlanError, STEP_KINDS, Step};
use crate::workload::Workload;

/// What a kind's validation knows about the step it checks, and helpers that name the field
/// (`steps[3].interval`) in every error.
pub struct StepCx<'a> {
    loc: &'a Loc<'a>,
    index: usize,
    span: Range<usize>,
    /// The step's timeout (its own or the plan's default).
    pub timeout: Duration,
    /// Faults the plan allows.
    pub faults: &'a [FaultMode],
}

impl std::fmt::Debug for StepCx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepCx")
            .field("index", &self.index)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StepCx<'_> {
    /// `steps[i].{name}`.
    pub fn field(&self, name: &str) -> String {
        format!("steps[{}].{name}", self.index)
    }

    /// The whole step table's span, for errors about several fields together.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The span of `v` if present, else the step's.
    pub fn span_of<T>(&self, v: &Option<Spanned<T>>) -> Range<usize> {
        v.as_ref().map_or_else(|| self.span(), Spanned::span)
    }

    pub fn err(&self, span: Range<usize>, name: &str, message: impl Into<String>) -> PlanError {
        self.loc.err(span, self.field(name), message)
    }

    /// An integer in `min..=max`, or `default` when absent.
    pub fn count(
        &self,
        v: &Option<Spanned<i64>>,
        name: &str,
        default: u64,
        min: i64,
        max: i64,
    ) -> Result<u64, PlanError> {
        match v {
            Some(v) => self.loc.count(v, &self.field(name), min, max),
            None => Ok(default),
        }
    }

    /// A duration (`"500ms"`), longer than zero and at most 24 h, or `default` when absent.
    pub fn duration(&self, v: &Option<Spanned<String>>, name: &str, default: Duration) -> Result<Duration, PlanError> {
        self.loc.duration_or(v.as_ref(), &self.field(name), default)
    }

    /// One of a closed set of words, or `default` when absent.
    pub fn choice<T: Copy>(
        &self,
        v: &Option<Spanned<String>>,
        name: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, PlanError> {
        let Some(v) = v else { return Ok(default) };
        options
            .iter()
            .find(|(word, _)| *word == v.get_ref().as_str())
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
                self.err(
                    v.span(),
                    name,
                    format!("`{}` is not one of {}", v.get_ref(), words.join(", ")),
                )
            })
    }

    /// Refuses `d` unless it is shorter than the step's timeout.
    pub fn shorter_than_timeout(&self, d: Duration, span: Range<usize>, name: &str) -> Result<(), PlanError> {
        if d >= self.timeout {
            return Err(self.err(
                span,
                name,
                format!(
                    "{} is not shorter than the step timeout {}",
                    super::fmt_duration(d),
                    super::fmt_duration(self.timeout)
                ),
            ));
        }
        Ok(())
    }
}

/// The step's head: what every kind has.
#[derive(Deserialize)]
struct Head {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

/// Reads step `i`; returns it (unnamed) and its explicit name with the name's span.
#[allow(clippy::type_complexity)]
pub(super) fn parse(
    loc: &Loc<'_>,
    i: usize,
    value: Spanned<DeValue<'_>>,
    default_timeout: Duration,
    faults: &[FaultMode],
) -> Result<(Step, Option<(String, Range<usize>)>), PlanError> {
    let span = value.span();
    let mut params = match value.into_inner() {
        DeValue::Table(t) => t,
        other => {
            return Err(loc.err(
                span,
                format!("steps[{i}]"),
                format!("invalid type: {}, expected a [[steps]] table", other.type_str()),
            ));
        }
    };
    let mut head = DeTable::new();
    for key in ["name", "kind", "timeout"] {
        if let Some((k, v)) = params.remove_entry(key) {
            head.insert(k, v);
        }
    }
    let head = Head::deserialize(toml::de::Deserializer::from(Spanned::new(span.clone(), head)))
        .map_err(|e| loc.toml_error(&e))?;
    let Some(kind) = &head.kind else {
        return Err(loc.err(
            span,
            format!("steps[{i}].kind"),
            format!("missing: one of {}", STEP_KINDS.join(", ")),
        ));
    };
    let timeout = loc.duration_or(head.timeout.as_ref(), &format!("steps[{i}].timeout"), default_timeout)?;
    let cx = StepCx {
        loc,
        index: i,
        span: span.clone(),
        timeout,
        faults,
    };
    let spec = crate::workloads::parse_step(kind.get_ref(), Spanned::new(span, params), &cx).unwrap_or_else(|| {
        Err(loc.err(
            kind.span(),
            format!("steps[{i}].kind"),
            format!(
                "unknown step kind `{}`: expected one of {}",
                kind.get_ref(),
                STEP_KINDS.join(", ")
            ),
        ))
    })?;
    let explicit = head.name.as_ref().map(|n| (n.get_ref().trim().to_owned(), n.span()));
    Ok((
        Step {
            name: String::new(),
            timeout,
            spec,
        },
        explicit,
    ))
}

/// Reads a kind's raw table (every key one of its parameters) and validates it.
pub(crate) fn parse_kind<W: Workload>(params: Spanned<DeTable<'_>>, cx: &StepCx<'_>) -> Result<W, PlanError> {
    let fields = field_names::<W::Raw>();
    for (k, v) in params.get_ref() {
        if !fields.contains(&k.get_ref().as_ref()) {
            return Err(cx.err(
                v.span(),
                k.get_ref(),
                format!(
                    "not a parameter of `{}` (it takes: {})",
                    W::KIND,
                    if fields.is_empty() {
                        "nothing".to_owned()
                    } else {
                        fields.join(", ")
                    }
                ),
            ));
        }
    }
    let raw = W::Raw::deserialize(toml::de::Deserializer::from(params)).map_err(|e| cx.loc.toml_error(&e))?;
    W::validate(raw, cx)
}

/// The field names of a struct that serde derives `Deserialize` for, in declaration order:
/// serde hands them to `deserialize_struct`, which this probe records.
pub(crate) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Two {
        alpha: u32,
        beta: Option<String>,
    }

    #[test]
    fn the_probe_lists_a_structs_fields_in_order() {
        assert_eq!(field_names::<Two>(), ["alpha", "beta"]);
    }
}
