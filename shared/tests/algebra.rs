//! Properties of the aggregate algebra: every merge is associative and commutative, any split
//! of an event sequence applied separately and merged equals the whole, and states survive
//! their binary encoding.

use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::{Config, Event, MetricExpr, Value, ViewDef, ViewState};
use proptest::prelude::*;

const RELATIVE: f64 = 1e-9;

const CONFIG: &str = r#"
[[source]]
name = "payments"
topic = "payments"
event_time = "ts"

[[view]]
name = "everything"
source = "payments"
group_by = ["card", "country"]
granularity = "1m"
[view.metrics]
tx = "count"
amount = "sum(amount)"
units = "sum(units)"
low = "min(amount)"
high = "max(amount)"
mean = "avg(amount)"
merchants = "approx_distinct(merchant)"
p90 = "quantile(amount, 0.9)"
top = "top_k(merchant, 3)"

[[view]]
name = "exact_ints"
source = "payments"
group_by = ["country"]
granularity = "1h"
[view.metrics]
tx = "count"
units = "sum(units)"
low = "min(units)"
high = "max(units)"
merchants = "approx_distinct(merchant)"
p50 = "quantile(units, 0.5)"
"#;

fn views() -> (Arc<ViewDef>, Arc<ViewDef>, Config) {
    let config = Config::from_toml(CONFIG).unwrap();
    (config.views[0].clone(), config.views[1].clone(), config)
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1_000_000i64..1_000_000).prop_map(Value::Int),
        (-1e6f64..1e6).prop_map(|f| Value::Float(if f == 0.0 { 0.0 } else { f })),
        Just(Value::Null),
    ]
}

/// Events over a few hours, out of order, with null and mixed-type numbers.
fn events(max: usize) -> impl Strategy<Value = Vec<Event>> {
    let (_, _, config) = views();
    let source = config.source("payments").unwrap().clone();
    let event = (
        0i64..4 * 3_600_000,
        0u8..6,
        prop_oneof![Just("US"), Just("DE"), Just("BR")],
        0u32..40,
        number(),
        (-1000i64..1000).prop_map(Value::Int),
    );
    proptest::collection::vec(event, 0..max).prop_map(move |rows| {
        rows.into_iter()
            .map(|(time, card, country, merchant, amount, units)| {
                let mut values = vec![Value::Null; source.fields.len()];
                let mut set = |name: &str, value: Value| values[source.slot(name).unwrap()] = value;
                set(
                    "card",
                    if card == 5 {
                        Value::Null
                    } else {
                        Value::Str(format!("card-{card}").into())
                    },
                );
                set("country", Value::Str(country.into()));
                set(
                    "merchant",
                    if merchant % 7 == 0 {
                        Value::Int(i64::from(merchant))
                    } else {
                        Value::Str(format!("m{merchant}").into())
                    },
                );
                set("amount", amount);
                set("units", units);
                Event {
                    time_ms: 1_700_000_000_000 + time,
                    values,
                }
            })
            .collect()
    })
}

fn state_of(view: &Arc<ViewDef>, events: &[Event]) -> ViewState {
    let mut state = ViewState::new(view.clone());
    state.apply(events);
    state
}

fn merged(view: &Arc<ViewDef>, parts: &[&[Event]]) -> ViewState {
    let mut total = ViewState::new(view.clone());
    for part in parts {
        total.merge(&state_of(view, part)).unwrap();
    }
    total
}

fn metric_states(expr: &MetricExpr, values: &[Value]) -> MetricState {
    let mut state = MetricState::empty(expr);
    let mut scratch = String::new();
    values.iter().for_each(|v| state.update(v, &mut scratch));
    state
}

fn every_metric() -> Vec<MetricExpr> {
    let field = || "f".to_owned();
    vec![
        MetricExpr::Count,
        MetricExpr::Sum { field: field() },
        MetricExpr::Min { field: field() },
        MetricExpr::Max { field: field() },
        MetricExpr::Avg { field: field() },
        MetricExpr::ApproxDistinct { field: field() },
        MetricExpr::Quantile {
            field: field(),
            q: 0.75,
        },
        MetricExpr::TopK {
            field: field(),
            k: 2,
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn apply_equals_reference_recompute(events in events(300)) {
        let (view, ints, _) = views();
        for view in [view, ints] {
            let applied = state_of(&view, &events);
            let reference = ViewState::recompute(view.clone(), &events);
            prop_assert_eq!(&applied, &reference);
            prop_assert_eq!(applied.rows(), reference.rows());
        }
    }

    #[test]
    fn any_split_merged_equals_the_whole(events in events(400), cuts in proptest::collection::vec(0usize..400, 0..5)) {
        let (view, ints, _) = views();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(events.len())).collect();
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([events.len()]) {
            parts.push(&events[start..cut]);
            start = cut;
        }
        let whole = ViewState::recompute(view.clone(), &events);
        let split = merged(&view, &parts);
        prop_assert!(split.approx_eq(&whole, RELATIVE).is_ok(), "{:?}", split.approx_eq(&whole, RELATIVE));
        // Integer-only views (count, int sums, min, max, HLL, quantile sketch) merge exactly.
        let whole = ViewState::recompute(ints.clone(), &events);
        prop_assert_eq!(merged(&ints, &parts), whole);
    }

    #[test]
    fn view_merge_is_commutative_and_associative(a in events(150), b in events(150), c in events(150)) {
        let (view, ints, _) = views();
        for view in [view, ints] {
            let (sa, sb, sc) = (state_of(&view, &a), state_of(&view, &b), state_of(&view, &c));
            let mut ab = sa.clone();
            ab.merge(&sb).unwrap();
            let mut ba = sb.clone();
            ba.merge(&sa).unwrap();
            prop_assert!(ab.approx_eq(&ba, RELATIVE).is_ok());
            let mut ab_c = ab.clone();
            ab_c.merge(&sc).unwrap();
            let mut bc = sb.clone();
            bc.merge(&sc).unwrap();
            let mut a_bc = sa.clone();
            a_bc.merge(&bc).unwrap();
            prop_assert!(ab_c.approx_eq(&a_bc, RELATIVE).is_ok(), "{:?}", ab_c.approx_eq(&a_bc, RELATIVE));
        }
    }

    #[test]
    fn metric_merge_laws_hold_for_every_kind(
        a in proptest::collection::vec(number(), 0..200),
        b in proptest::collection::vec(number(), 0..200),
        c in proptest::collection::vec(number(), 0..200),
    ) {
        for expr in every_metric() {
            let (sa, sb, sc) = (metric_states(&expr, &a), metric_states(&expr, &b), metric_states(&expr, &c));
            let mut ab = sa.clone();
            ab.merge(&sb).unwrap();
            let mut ba = sb.clone();
            ba.merge(&sa).unwrap();
            prop_assert!(ab.approx_eq(&ba, RELATIVE).is_ok(), "{expr}: {:?}", ab.approx_eq(&ba, RELATIVE));
            let mut ab_c = ab.clone();
            ab_c.merge(&sc).unwrap();
            let mut bc = sb.clone();
            bc.merge(&sc).unwrap();
            let mut a_bc = sa.clone();
            a_bc.merge(&bc).unwrap();
            prop_assert!(ab_c.approx_eq(&a_bc, RELATIVE).is_ok(), "{expr}: {:?}", ab_c.approx_eq(&a_bc, RELATIVE));
            // Merging the parts equals building over the concatenation.
            let whole: Vec<Value> = a.iter().chain(&b).chain(&c).cloned().collect();
            prop_assert!(ab_c.approx_eq(&metric_states(&expr, &whole), RELATIVE).is_ok(), "{expr}");
            // The empty state is the identity.
            let mut with_empty = sa.clone();
            with_empty.merge(&MetricState::empty(&expr)).unwrap();
            prop_assert_eq!(&with_empty, &sa);
        }
    }

    #[test]
    fn encoding_round_trips(values in proptest::collection::vec(number(), 0..300), keys in proptest::collection::vec(0u32..5000, 0..3000)) {
        for expr in every_metric() {
            let state = metric_states(&expr, &values);
            let decoded = MetricState::decode(&state.encode()).unwrap();
            prop_assert_eq!(&decoded, &state);
        }
        // Large key sets take the dense HLL and pruned top-k paths.
        let keyed: Vec<Value> = keys.iter().map(|k| Value::Int(i64::from(*k))).collect();
        for expr in [MetricExpr::ApproxDistinct { field: "f".into() }, MetricExpr::TopK { field: "f".into(), k: 1 }] {
            let state = metric_states(&expr, &keyed);
            prop_assert_eq!(MetricState::decode(&state.encode()).unwrap(), state);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = MetricState::decode(&bytes);
        let mut versioned = vec![1u8];
        versioned.extend_from_slice(&bytes);
        let _ = MetricState::decode(&versioned);
    }

    #[test]
    fn distinct_sketch_merges_exactly_across_sparse_and_dense(
        a in proptest::collection::vec(0u32..1_000_000, 0..4000),
        b in proptest::collection::vec(0u32..1_000_000, 0..4000),
    ) {
        let expr = MetricExpr::ApproxDistinct { field: "f".into() };
        let to_values = |keys: &[u32]| keys.iter().map(|k| Value::Int(i64::from(*k))).collect::<Vec<_>>();
        let mut merged = metric_states(&expr, &to_values(&a));
        merged.merge(&metric_states(&expr, &to_values(&b))).unwrap();
        let whole: Vec<u32> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(merged, metric_states(&expr, &to_values(&whole)));
    }

    #[test]
    fn top_k_merges_within_its_error_bound(
        a in proptest::collection::vec(0u32..500, 0..3000),
        b in proptest::collection::vec(0u32..500, 0..3000),
        c in proptest::collection::vec(0u32..500, 0..3000),
    ) {
        // 500 possible keys overflow the 64 counters of top_k(f, 1): merges prune.
        let expr = MetricExpr::TopK { field: "f".into(), k: 1 };
        let to_values = |keys: &[u32]| keys.iter().map(|k| Value::Int(i64::from(*k % 7 * (*k % 3) + *k / 450))).collect::<Vec<_>>();
        let (sa, sb, sc) = (metric_states(&expr, &to_values(&a)), metric_states(&expr, &to_values(&b)), metric_states(&expr, &to_values(&c)));
        let mut ab_c = sa.clone();
        ab_c.merge(&sb).unwrap();
        ab_c.merge(&sc).unwrap();
        let mut bc = sb.clone();
        bc.merge(&sc).unwrap();
        let mut a_bc = sa;
        a_bc.merge(&bc).unwrap();
        prop_assert!(ab_c.approx_eq(&a_bc, RELATIVE).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn view_state_encoding_round_trips(events in events(300)) {
        let (view, ints, _) = views();
        for view in [view, ints] {
            let state = state_of(&view, &events);
            let decoded = ViewState::decode(view.clone(), &state.encode()).unwrap();
            prop_assert_eq!(decoded, state);
        }
    }

    #[test]
    fn merge_matching_selects_exactly_the_range_and_filter(
        events in events(300),
        from in 0i64..4 * 3_600_000,
        width in 0i64..3 * 3_600_000,
        country in prop_oneof![Just(None), Just(Some("US")), Just(Some("DE"))],
    ) {
        let (view, _, _) = views();
        let from_ms = 1_700_000_000_000 + from;
        let to_ms = from_ms + width;
        let filters = country.map(|c| vec![(1usize, Value::Str(c.into()))]).unwrap_or_default();
        let query = braid_shared::CellQuery { from_ms, to_ms, filters: filters.clone() };
        let mut selected = ViewState::new(view.clone());
        selected.merge_matching(&state_of(&view, &events), &query).unwrap();
        let country_slot = view.group_by[1].slot;
        let kept: Vec<Event> = events
            .iter()
            .filter(|e| {
                let bucket = view.bucket_of(e.time_ms);
                bucket >= from_ms && bucket < to_ms && filters.iter().all(|(_, v)| &e.values[country_slot] == v)
            })
            .cloned()
            .collect();
        prop_assert_eq!(selected, ViewState::recompute(view.clone(), &kept));
    }

    #[test]
    fn point_reads_of_a_changing_state_select_exactly_the_key(
        events in events(300),
        cuts in (0usize..300, 0usize..300),
        from in 0i64..4 * 3_600_000,
        width in 0i64..3 * 3_600_000,
        card in 0u8..7,
        country in prop_oneof![Just("US"), Just("DE"), Just("BR")],
    ) {
        let (view, _, _) = views();
        let from_ms = 1_700_000_000_000 + from;
        let to_ms = from_ms + width;
        let card = if card == 5 { Value::Null } else { Value::Str(format!("card-{card}").into()) };
        let query = braid_shared::CellQuery {
            from_ms,
            to_ms,
            filters: vec![(1, Value::Str(country.into())), (0, card.clone())],
        };
        let expected = |events: &[Event]| {
            let kept: Vec<Event> = events
                .iter()
                .filter(|e| {
                    let bucket = view.bucket_of(e.time_ms);
                    bucket >= from_ms
                        && bucket < to_ms
                        && e.values[view.group_by[0].slot] == card
                        && e.values[view.group_by[1].slot] == Value::Str(country.into())
                })
                .cloned()
                .collect();
            ViewState::recompute(view.clone(), &kept)
        };
        // The first point read indexes the state; cells added afterwards by apply and by merge
        // must be found by the next ones.
        let (a, b) = (cuts.0.min(cuts.1).min(events.len()), cuts.0.max(cuts.1).min(events.len()));
        let mut live = ViewState::new(view.clone());
        live.apply(&events[..a]);
        let mut read = ViewState::new(view.clone());
        read.merge_matching(&live, &query).unwrap();
        prop_assert_eq!(&read, &expected(&events[..a]));
        live.apply(&events[a..b]);
        live.merge(&state_of(&view, &events[b..])).unwrap();
        let mut read = ViewState::new(view.clone());
        read.merge_matching(&live, &query).unwrap();
        prop_assert_eq!(&read, &expected(&events));
    }

    #[test]
    fn a_point_read_of_an_indexed_state_selects_exactly_the_key(
        events in events(300),
        from in 0i64..4 * 3_600_000,
        width in 0i64..3 * 3_600_000,
        card in 0u8..7,
        country in prop_oneof![Just("US"), Just("DE"), Just("BR")],
    ) {
        let (view, _, _) = views();
        let from_ms = 1_700_000_000_000 + from;
        let card = if card == 5 { Value::Null } else { Value::Str(format!("card-{card}").into()) };
        let query = braid_shared::CellQuery {
            from_ms,
            to_ms: from_ms + width,
            filters: vec![(1, Value::Str(country.into())), (0, card)],
        };
        // Indexed up front, as a batch snapshot's views are: the point read equals a plain
        // fold of the key's events in the range.
        let all = state_of(&view, &events);
        all.index_keys();
        let mut indexed = ViewState::new(view.clone());
        indexed.merge_matching(&all, &query).unwrap();
        let kept: Vec<Event> = events
            .iter()
            .filter(|e| {
                let bucket = view.bucket_of(e.time_ms);
                (query.from_ms..query.to_ms).contains(&bucket)
                    && query.filters.iter().all(|(i, v)| &e.values[view.group_by[*i].slot] == v)
            })
            .cloned()
            .collect();
        prop_assert_eq!(&indexed, &ViewState::recompute(view.clone(), &kept));
    }
}

#[test]
fn decoding_a_state_checks_view_and_bytes() {
    let (view, ints, _) = views();
    let encoded = ViewState::new(view.clone()).encode();
    assert!(
        ViewState::decode(ints, &encoded)
            .unwrap_err()
            .to_string()
            .contains("another definition")
    );
    assert!(ViewState::decode(view.clone(), &[]).is_err());
    assert!(
        ViewState::decode(view.clone(), &[2, 0])
            .unwrap_err()
            .to_string()
            .contains("version 2")
    );
    for cut in 0..encoded.len() {
        let _ = ViewState::decode(view.clone(), &encoded[..cut]);
    }
}

#[test]
fn merging_states_of_different_views_fails() {
    let (view, ints, _) = views();
    let mut state = ViewState::new(view);
    assert!(state.merge(&ViewState::new(ints)).is_err());
}
