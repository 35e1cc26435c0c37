//! Cost of rendering a scrape of the whole catalogue (4 agents × 3 models),
//! against rendering an empty recorder, and of recording one histogram sample.
//!
//! Run: `cargo bench -p mantissa-prometheus --bench render`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mantissa_core::catalog::{self, labels as l};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("prometheus_render");

    let (_empty_rec, empty) = mantissa_prometheus::build_recorder().unwrap();
    g.bench_function("empty_recorder", |b| b.iter(|| black_box(empty.render())));

    let (recorder, handle) = mantissa_prometheus::build_recorder().unwrap();
    metrics::with_local_recorder(&recorder, || {
        for agent in ["trader", "analyst", "manager", "monitor"] {
            for model in ["mock-low", "mock-medium", "mock-high"] {
                for (name, _) in catalog::HISTOGRAMS {
                    let h = metrics::histogram!(*name, l::AGENT => agent, l::MODEL => model);
                    for i in 0..50 {
                        h.record(f64::from(i) * 0.37);
                    }
                }
                for name in catalog::COUNTERS {
                    metrics::counter!(*name, l::AGENT => agent, l::MODEL => model).increment(3);
                }
                for name in catalog::GAUGES {
                    metrics::gauge!(*name, l::AGENT => agent, l::MODEL => model).set(1.0);
                }
            }
        }
    });
    handle.render();
    g.bench_function("full_catalogue_4x3", |b| b.iter(|| black_box(handle.render())));
    g.finish();

    let mut g = c.benchmark_group("prometheus_record");
    let h = metrics::with_local_recorder(
        &recorder,
        || metrics::histogram!(catalog::GEN_AI_CLIENT_OPERATION_DURATION, l::AGENT => "trader"),
    );
    g.bench_function("histogram_record_held_handle", |b| {
        b.iter(|| h.record(black_box(0.42)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
