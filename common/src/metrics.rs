//! Mergeable metrics: what a workload measures and what crosses the wire.
//!
//! A [`MetricSet`] holds named HDR histograms, counters and gauges. Merging is exact: histograms
//! add bucket by bucket, counters sum, gauges combine by their declared rule. Percentiles of a
//! merged set are therefore the percentiles of every sample from every agent, never averages of
//! per-agent percentiles.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use std::io::{Read, Write};

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::Serialize;

/// The histogram type used everywhere: `u64` counts, 3 significant figures, auto-resizing range.
pub type Hist = Histogram<u64>;

/// A new, empty histogram with the suite's precision (3 significant figures, auto-resizing).
pub fn new_histogram() -> Hist {
    Histogram::new(3).expect("3 significant figures is a valid HDR configuration")
}

/// How two values of the same gauge combine when results from several agents merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GaugeMerge {
    Sum,
    Min,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Gauge {
    pub value: f64,
    pub merge: GaugeMerge,
}

impl Gauge {
    fn combine(&mut self, other: Gauge) {
        self.value = match self.merge {
            GaugeMerge::Sum => self.value + other.value,
            GaugeMerge::Min => self.value.min(other.value),
            GaugeMerge::Max => self.value.max(other.value),
        };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("histogram `{name}`: cannot add: {reason}")]
    HistogramAdd { name: String, reason: String },
    #[error("gauge `{name}`: merge rule {left:?} does not match {right:?}")]
    GaugeRule {
        name: String,
        left: GaugeMerge,
        right: GaugeMerge,
    },
    #[error("histogram `{name}`: cannot decode V2 serialization: {reason}")]
    Decode { name: String, reason: String },
    #[error("histogram `{name}`: cannot encode: {reason}")]
    Encode { name: String, reason: String },
}

/// Named histograms, counters and gauges, merged exactly across agents.
#[derive(Clone, Debug, Default)]
pub struct MetricSet {
    pub histograms: BTreeMap<String, Hist>,
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, Gauge>,
}

impl MetricSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The histogram called `name`, created empty if missing.
    pub fn histogram_mut(&mut self, name: &str) -> &mut Hist {
        self.histograms.entry(name.to_owned()).or_insert_with(new_histogram)
    }

    pub fn add_counter(&mut self, name: &str, value: u64) {
        let c = self.counters.entry(name.to_owned()).or_insert(0);
        *c = c.saturating_add(value);
    }

    /// Sets a gauge, combining with an existing value of the same name by `merge`.
    pub fn set_gauge(&mut self, name: &str, value: f64, merge: GaugeMerge) {
        let g = Gauge { value, merge };
        match self.gauges.get_mut(name) {
            Some(existing) if existing.merge == merge => existing.combine(g),
            _ => {
                self.gauges.insert(name.to_owned(), g);
            }
        }
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.gauges.get(name).map(|g| g.value)
    }

    pub fn histogram(&self, name: &str) -> Option<&Hist> {
        self.histograms.get(name)
    }

    /// Adds `other` into `self`, exactly.
    pub fn merge(&mut self, other: &MetricSet) -> Result<(), MetricsError> {
        for (name, h) in &other.histograms {
            self.histogram_mut(name)
                .add(h)
                .map_err(|e| MetricsError::HistogramAdd {
                    name: name.clone(),
                    reason: format!("{e:?}"),
                })?;
        }
        for (name, v) in &other.counters {
            self.add_counter(name, *v);
        }
        for (name, g) in &other.gauges {
            match self.gauges.get_mut(name) {
                Some(existing) if existing.merge != g.merge => {
                    return Err(MetricsError::GaugeRule {
                        name: name.clone(),
                        left: existing.merge,
                        right: g.merge,
                    });
                }
                Some(existing) => existing.combine(*g),
                None => {
                    self.gauges.insert(name.clone(), *g);
                }
            }
        }
        Ok(())
    }
}

/// HdrHistogram's cookies: plain V2, and V2 wrapped in zlib ("V2 deflate").
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// Serializes a histogram in the standard HdrHistogram V2 deflate format: the compressed cookie,
/// the payload length, then the plain V2 encoding compressed with zlib at the best level (any
/// HdrHistogram implementation reads it; the level only changes the size).
pub fn encode_histogram(name: &str, h: &Hist) -> Result<Vec<u8>, MetricsError> {
    let encode_err = |reason: String| MetricsError::Encode {
        name: name.to_owned(),
        reason,
    };
    let mut plain = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut plain)
        .map_err(|e| encode_err(format!("{e:?}")))?;
    let mut z = flate2::write::ZlibEncoder::new(Vec::with_capacity(plain.len() / 2), flate2::Compression::best());
    z.write_all(&plain).map_err(|e| encode_err(e.to_string()))?;
    let compressed = z.finish().map_err(|e| encode_err(e.to_string()))?;
    let len = u32::try_from(compressed.len()).map_err(|_| encode_err("histogram over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(8 + compressed.len());
    out.extend_from_slice(&V2_COMPRESSED_COOKIE.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&compressed);
    Ok(out)
}

/// Reads a histogram in the V2 format, plain or deflate. The deflate payload is inflated in one
/// call and the plain bytes parsed from a slice, which is several times faster than streaming
/// the header through a fresh decoder.
pub fn decode_histogram(name: &str, bytes: &[u8]) -> Result<Hist, MetricsError> {
    let decode_err = |reason: String| MetricsError::Decode {
        name: name.to_owned(),
        reason,
    };
    let plain;
    let v2: &[u8] = match bytes.get(..8) {
        Some(head) if head[..4] == V2_COMPRESSED_COOKIE.to_be_bytes() => {
            let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let payload = bytes
                .get(8..8 + len)
                .ok_or_else(|| decode_err("truncated deflate payload".into()))?;
            let mut out = Vec::with_capacity(len * 4);
            flate2::read::ZlibDecoder::new(payload)
                .read_to_end(&mut out)
                .map_err(|e| decode_err(format!("inflate: {e}")))?;
            if out.get(..4) != Some(&V2_COOKIE.to_be_bytes()[..]) {
                return Err(decode_err("the inflated payload is not V2".into()));
            }
            plain = out;
            &plain
        }
        _ => bytes,
    };
    let mut h: Hist = Deserializer::new()
        .deserialize(&mut &v2[..])
        .map_err(|e| decode_err(format!("{e:?}")))?;
    h.auto(true);
    Ok(h)
}

/// The figures the report shows for a histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct HistSummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl HistSummary {
    pub fn of(h: &Hist) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::V2DeflateSerializer;

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_samples() {
        // Three "agents" with different distributions; one reference histogram fed everything.
        let mut reference = new_histogram();
        let mut merged = MetricSet::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for agent in 0..3u64 {
            let mut set = MetricSet::new();
            for _ in 0..20_000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let v = 20 + (rng % (1000 * (agent + 1)));
                set.histogram_mut("lat").record(v).unwrap();
                reference.record(v).unwrap();
            }
            // Through the wire format, as agents send it.
            let bytes = encode_histogram("lat", &set.histograms["lat"]).unwrap();
            let mut wire = MetricSet::new();
            wire.histograms
                .insert("lat".into(), decode_histogram("lat", &bytes).unwrap());
            merged.merge(&wire).unwrap();
        }
        let m = &merged.histograms["lat"];
        assert_eq!(m.len(), reference.len());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(m.value_at_quantile(q), reference.value_at_quantile(q), "q={q}");
        }
        assert_eq!(HistSummary::of(m), HistSummary::of(&reference));
    }

    #[test]
    fn counters_sum_and_gauges_follow_their_rule() {
        let mut a = MetricSet::new();
        a.add_counter("ops", 5);
        a.set_gauge("start", 10.0, GaugeMerge::Min);
        a.set_gauge("end", 20.0, GaugeMerge::Max);
        a.set_gauge("rate", 1.5, GaugeMerge::Sum);
        let mut b = MetricSet::new();
        b.add_counter("ops", 7);
        b.add_counter("errors", 1);
        b.set_gauge("start", 8.0, GaugeMerge::Min);
        b.set_gauge("end", 25.0, GaugeMerge::Max);
        b.set_gauge("rate", 2.5, GaugeMerge::Sum);
        a.merge(&b).unwrap();
        assert_eq!(a.counter("ops"), 12);
        assert_eq!(a.counter("errors"), 1);
        assert_eq!(a.gauge("start"), Some(8.0));
        assert_eq!(a.gauge("end"), Some(25.0));
        assert_eq!(a.gauge("rate"), Some(4.0));
    }

    #[test]
    fn conflicting_gauge_rules_are_an_error() {
        let mut a = MetricSet::new();
        a.set_gauge("g", 1.0, GaugeMerge::Min);
        let mut b = MetricSet::new();
        b.set_gauge("g", 1.0, GaugeMerge::Max);
        let err = a.merge(&b).unwrap_err().to_string();
        assert!(err.contains("gauge `g`"), "{err}");
    }

    #[test]
    fn our_v2_deflate_and_the_crates_read_each_other() {
        let mut h = new_histogram();
        for v in [1u64, 7, 20, 300, 4_000, 55_000, 600_000, 7_000_000] {
            h.record_n(v, v % 13 + 1).unwrap();
        }
        // Ours → the crate's own deserializer.
        let ours = encode_histogram("h", &h).unwrap();
        let back: Hist = Deserializer::new().deserialize(&mut &ours[..]).unwrap();
        assert_eq!(back, h);
        // The crate's V2 deflate and plain V2 → ours.
        let mut theirs = Vec::new();
        V2DeflateSerializer::new().serialize(&h, &mut theirs).unwrap();
        assert_eq!(decode_histogram("h", &theirs).unwrap(), h);
        let mut plain = Vec::new();
        V2Serializer::new().serialize(&h, &mut plain).unwrap();
        assert_eq!(decode_histogram("h", &plain).unwrap(), h);
        // A truncated payload is an error, not a panic.
        assert!(decode_histogram("h", &ours[..ours.len() / 2]).is_err());
    }

    #[test]
    fn garbage_is_not_a_histogram() {
        let err = decode_histogram("x", b"not a histogram").unwrap_err();
        assert!(err.to_string().contains("histogram `x`"));
    }
}
