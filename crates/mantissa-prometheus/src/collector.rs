//! Collectors: metrics read at scrape time instead of through the `metrics`
//! recorder (the health layer's per-series cells, see
//! `mantissa_health::HealthRegistry::collector`), rendered after the
//! recorder's own output by [`ExporterHandle::render`](crate::ExporterHandle::render).

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, RwLock};

use mantissa_core::catalog::{self, MetricVisitor};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::formatting::{sanitize_label_value, write_help_line, write_type_line};

/// Something that reports metric values when the exporter renders. Any
/// `Fn(&mut dyn MetricVisitor) + Send + Sync + 'static` is one (for example
/// `mantissa_health::HealthRegistry::collector()`).
pub trait Collector: Send + Sync + 'static {
    /// Reports every value into `out`.
    fn collect(&self, out: &mut dyn MetricVisitor);
}

impl<F> Collector for F
where
    F: Fn(&mut dyn MetricVisitor) + Send + Sync + 'static,
{
    fn collect(&self, out: &mut dyn MetricVisitor) {
        self(out)
    }
}

/// The collectors of one exporter, with what rendering them needs: the
/// catalogue's help texts and the exporter's global labels.
pub(crate) struct Collectors {
    list: RwLock<Vec<Arc<dyn Collector>>>,
    help: HashMap<String, String>,
    global_labels: Vec<(String, String)>,
}

impl fmt::Debug for Collectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.list.read().map_or(0, |l| l.len());
        f.debug_struct("Collectors")
            .field("collectors", &n)
            .finish_non_exhaustive()
    }
}

impl Collectors {
    pub(crate) fn new(global_labels: Vec<(String, String)>) -> Self {
        let help = Descriptions::default();
        metrics::with_local_recorder(&help, catalog::describe_all);
        let help = help.0.into_inner().unwrap_or_else(|e| e.into_inner());
        Self {
            list: RwLock::new(Vec::new()),
            help,
            global_labels,
        }
    }

    pub(crate) fn register(&self, collector: Arc<dyn Collector>) {
        self.list
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(collector);
    }

    /// Appends the collected families to `text`. Values reported twice for
    /// the same name and labels are summed.
    pub(crate) fn render_into(&self, text: &mut String) {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        if list.is_empty() {
            return;
        }
        let mut families = Families::default();
        for c in list.iter() {
            c.collect(&mut families);
        }
        drop(list);
        for (name, family) in &families.0 {
            if let Some(desc) = self.help.get(*name) {
                write_help_line(text, name, None, None, desc);
            }
            write_type_line(text, name, None, None, family.kind.as_str());
            for (labels, value) in &family.series {
                match value {
                    Value::Scalar(v) => self.line(text, name, "", labels, None, *v),
                    Value::Histogram { counts, sum, count } => {
                        for (bound, n) in family.bounds.iter().zip(counts) {
                            self.line(text, name, "_bucket", labels, Some(&bound.to_string()), *n);
                        }
                        self.line(text, name, "_bucket", labels, Some("+Inf"), *count);
                        self.line(text, name, "_sum", labels, None, *sum);
                        self.line(text, name, "_count", labels, None, *count);
                    }
                }
            }
            text.push('\n');
        }
    }

    fn line(
        &self,
        text: &mut String,
        name: &str,
        suffix: &str,
        labels: &[(&'static str, String)],
        le: Option<&str>,
        value: impl fmt::Display,
    ) {
        text.push_str(name);
        text.push_str(suffix);
        let globals = self.global_labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let own = labels.iter().map(|(k, v)| (*k, v.as_str()));
        let mut first = true;
        for (k, v) in globals.chain(own).chain(le.map(|le| ("le", le))) {
            text.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(text, "{k}=\"{}\"", sanitize_label_value(v));
        }
        if !first {
            text.push('}');
        }
        let _ = writeln!(text, " {value}");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

enum Value {
    Scalar(f64),
    Histogram { counts: Vec<u64>, sum: f64, count: u64 },
}

struct Family {
    kind: Kind,
    bounds: &'static [f64],
    series: BTreeMap<Vec<(&'static str, String)>, Value>,
}

/// Collected values by family name, then by labels (in the order given).
#[derive(Default)]
struct Families(BTreeMap<&'static str, Family>);

impl Families {
    fn entry(
        &mut self,
        name: &'static str,
        kind: Kind,
        bounds: &'static [f64],
        labels: &[(&'static str, &str)],
    ) -> Option<&mut Value> {
        let family = self.0.entry(name).or_insert_with(|| Family {
            kind,
            bounds,
            series: BTreeMap::new(),
        });
        if family.kind != kind || family.bounds != bounds {
            // One name, one type: a second kind is a collector bug; drop it
            // rather than render an exposition Prometheus rejects.
            return None;
        }
        let key = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        Some(family.series.entry(key).or_insert_with(|| match kind {
            Kind::Histogram => Value::Histogram {
                counts: vec![0; bounds.len()],
                sum: 0.0,
                count: 0,
            },
            _ => Value::Scalar(0.0),
        }))
    }
}

impl MetricVisitor for Families {
    fn counter(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        if let Some(Value::Scalar(v)) = self.entry(name, Kind::Counter, &[], labels) {
            *v += value;
        }
    }

    fn gauge(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        if let Some(Value::Scalar(v)) = self.entry(name, Kind::Gauge, &[], labels) {
            *v += value;
        }
    }

    fn histogram(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, &str)],
        bounds: &'static [f64],
        counts: &[u64],
        sum: f64,
        count: u64,
    ) {
        if let Some(Value::Histogram {
            counts: c,
            sum: s,
            count: n,
        }) = self.entry(name, Kind::Histogram, bounds, labels)
        {
            for (a, b) in c.iter_mut().zip(counts) {
                *a = a.wrapping_add(*b);
            }
            *s += sum;
            *n = n.wrapping_add(count);
        }
    }
}

/// A recorder that only keeps descriptions: reads the catalogue's help texts.
#[derive(Default)]
struct Descriptions(Mutex<HashMap<String, String>>);

impl Descriptions {
    fn keep(&self, key: KeyName, description: SharedString) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.as_str().to_owned(), description.into_owned());
    }
}

impl Recorder for Descriptions {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.keep(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.keep(key, description);
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.keep(key, description);
    }

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
