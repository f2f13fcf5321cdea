//! Counting a batch into label sets under each metric's cap. Pure: the
//! records come in as rows of field texts and the result is data, so the
//! aggregation and the cap are tested without a host.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use pumphouse_sdk::Record;

use crate::config::{Kind, Spec};

/// The label value every label of a capped record gets.
pub const OTHER: &str = "__other__";

/// One record's field texts, in the order of [`Plan::fields`]; `None` for
/// a missing, null or non-scalar field.
pub type Row<'a> = Vec<Option<Cow<'a, str>>>;

/// The metrics records of one schema feed, and the fields they read.
#[derive(Debug)]
pub struct Plan {
    /// Every field some metric reads, once: a record is scanned once per
    /// field however many metrics use it.
    pub fields: Vec<String>,
    pub metrics: Vec<Metric>,
}

impl Plan {
    pub fn new(specs: Vec<Spec>) -> Plan {
        let mut fields: Vec<String> = Vec::new();
        let mut slot = |field: &str| match fields.iter().position(|f| f == field) {
            Some(i) => i,
            None => {
                fields.push(field.to_owned());
                fields.len() - 1
            }
        };
        let metrics = specs
            .into_iter()
            .map(|spec| Metric {
                label_slots: spec.labels.iter().map(|l| slot(&l.field)).collect(),
                value_slot: match &spec.kind {
                    Kind::Counter => None,
                    Kind::Histogram { value_field } => Some(slot(value_field)),
                },
                seen: HashSet::new(),
                warned_full: false,
                spec,
            })
            .collect();
        Plan { fields, metrics }
    }

    /// The fields of `rec` this plan reads.
    pub fn row<'a>(&self, rec: &Record<'a>) -> Row<'a> {
        self.fields.iter().map(|f| rec.field(f)).collect()
    }

    /// One [`Tally`] per metric, in the order of `metrics`.
    pub fn tally(&mut self, rows: &[Row<'_>]) -> Vec<Tally> {
        self.metrics.iter_mut().map(|m| m.tally(rows)).collect()
    }
}

/// One metric and the label sets this instance has exported for it.
#[derive(Debug)]
pub struct Metric {
    pub spec: Spec,
    /// Positions in [`Plan::fields`] of the labels' fields, in label order.
    label_slots: Vec<usize>,
    /// Position of a histogram's value field.
    value_slot: Option<usize>,
    /// Label sets counted so far; at `max_series`, new ones go to
    /// `__other__`.
    seen: HashSet<Vec<String>>,
    /// Whether the operator has been told this metric is full.
    pub warned_full: bool,
}

/// One batch's contribution to one metric.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    /// Label values (in label order) and what they got, in order of first
    /// appearance in the batch; `__other__` last.
    pub series: Vec<(Vec<String>, Series)>,
    /// Records counted under `__other__` because the metric was full.
    pub capped: u64,
    /// Histogram records without a finite numeric value, not observed.
    pub missing: u64,
}

/// What one label set got from a batch.
#[derive(Debug, Default, PartialEq)]
pub struct Series {
    /// Records counted.
    pub count: u64,
    /// Histograms: the observed values, one per record.
    pub values: Vec<f64>,
}

impl Series {
    fn add(&mut self, other: Series) {
        self.count += other.count;
        self.values.extend(other.values);
    }
}

impl Metric {
    /// Groups the rows by label values, then admits the batch's label sets
    /// in order of first appearance while the metric has room; records of
    /// the rest are counted under `__other__`, which keeps totals right
    /// while bounding the series the host has to keep.
    pub fn tally(&mut self, rows: &[Row<'_>]) -> Tally {
        let mut groups: Vec<(Vec<&str>, Series)> = Vec::new();
        let mut index: HashMap<Vec<&str>, usize> = HashMap::new();
        let mut missing = 0;
        for row in rows {
            let value = match self.value_slot {
                None => None,
                Some(slot) => match text(row, slot).and_then(number) {
                    Some(v) => Some(v),
                    None => {
                        missing += 1;
                        continue;
                    }
                },
            };
            // A missing field counts as "", which Prometheus shows as the
            // label being absent.
            let key: Vec<&str> = self
                .label_slots
                .iter()
                .map(|&slot| text(row, slot).unwrap_or(""))
                .collect();
            let i = *index.entry(key).or_insert_with_key(|key| {
                groups.push((key.clone(), Series::default()));
                groups.len() - 1
            });
            let series = &mut groups[i].1;
            series.count += 1;
            series.values.extend(value);
        }

        let mut tally = Tally {
            missing,
            ..Tally::default()
        };
        let mut other = Series::default();
        for (key, series) in groups {
            let key: Vec<String> = key.into_iter().map(str::to_owned).collect();
            if self.seen.contains(&key) || self.seen.len() < self.spec.max_series {
                self.seen.insert(key.clone());
                tally.series.push((key, series));
            } else {
                tally.capped += series.count;
                other.add(series);
            }
        }
        if other.count > 0 {
            let key = vec![OTHER.to_owned(); self.label_slots.len()];
            tally.series.push((key, other));
        }
        tally
    }
}

fn text<'r>(row: &'r Row<'_>, slot: usize) -> Option<&'r str> {
    row.get(slot).and_then(|v| v.as_deref())
}

/// A field's text as an observation: numbers (and text that reads as one);
/// NaN and infinities are no latency.
fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Label;

    fn spec(kind: Kind, labels: &[&str], max_series: usize) -> Spec {
        Spec {
            name: "m".into(),
            kind,
            labels: labels
                .iter()
                .map(|f| Label {
                    field: (*f).into(),
                    name: f.to_lowercase(),
                })
                .collect(),
            max_series,
        }
    }

    fn histogram(value_field: &str) -> Kind {
        Kind::Histogram {
            value_field: value_field.into(),
        }
    }

    fn row(values: &[Option<&'static str>]) -> Row<'static> {
        values.iter().map(|v| v.map(Cow::Borrowed)).collect()
    }

    fn keys(t: &Tally) -> Vec<(Vec<&str>, u64)> {
        t.series
            .iter()
            .map(|(k, s)| (k.iter().map(String::as_str).collect(), s.count))
            .collect()
    }

    #[test]
    fn fields_are_read_once_across_metrics() {
        let plan = Plan::new(vec![
            spec(Kind::Counter, &["Code", "Api"], 10),
            spec(histogram("Time"), &["Api"], 10),
        ]);
        assert_eq!(plan.fields, ["Code", "Api", "Time"]);
        assert_eq!(plan.metrics[1].label_slots, [1]);
        assert_eq!(plan.metrics[1].value_slot, Some(2));
    }

    #[test]
    fn counts_group_by_label_values_in_order_of_appearance() {
        let mut plan = Plan::new(vec![spec(Kind::Counter, &["Code", "Api"], 10)]);
        let rows = [
            row(&[Some("200"), Some("a")]),
            row(&[Some("500"), Some("a")]),
            row(&[Some("200"), Some("a")]),
            row(&[Some("200"), None]),
        ];
        let t = plan.tally(&rows).remove(0);
        assert_eq!(
            keys(&t),
            [
                (vec!["200", "a"], 2),
                (vec!["500", "a"], 1),
                (vec!["200", ""], 1)
            ]
        );
        assert_eq!((t.capped, t.missing), (0, 0));
    }

    #[test]
    fn histograms_observe_numbers_and_count_the_rest_as_missing() {
        let mut plan = Plan::new(vec![spec(histogram("Time"), &["Api"], 10)]);
        let rows = [
            row(&[Some("a"), Some("12")]),
            row(&[Some("a"), Some("1.5")]),
            row(&[Some("b"), None]),
            row(&[Some("b"), Some("fast")]),
            row(&[Some("b"), Some("NaN")]),
            row(&[Some("b"), Some("7")]),
        ];
        let t = plan.tally(&rows).remove(0);
        assert_eq!(t.missing, 3);
        assert_eq!(
            t.series,
            [
                (
                    vec!["a".to_owned()],
                    Series {
                        count: 2,
                        values: vec![12.0, 1.5]
                    }
                ),
                (
                    vec!["b".to_owned()],
                    Series {
                        count: 1,
                        values: vec![7.0]
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_full_metric_counts_new_label_sets_under_other() {
        let mut plan = Plan::new(vec![spec(histogram("Time"), &["Api", "Code"], 2)]);
        let first = [
            row(&[Some("a"), Some("200"), Some("1")]),
            row(&[Some("b"), Some("200"), Some("2")]),
            row(&[Some("c"), Some("200"), Some("3")]),
            row(&[Some("a"), Some("200"), Some("4")]),
        ];
        let t = plan.tally(&first).remove(0);
        assert_eq!(
            keys(&t),
            [
                (vec!["a", "200"], 2),
                (vec!["b", "200"], 1),
                (vec![OTHER, OTHER], 1)
            ]
        );
        assert_eq!(t.capped, 1);
        assert_eq!(t.series[2].1.values, [3.0]);
        // Known sets keep their own series in later batches; new ones do not
        // get in, and the total is preserved.
        let second = [
            row(&[Some("d"), Some("500"), Some("5")]),
            row(&[Some("b"), Some("200"), Some("6")]),
            row(&[Some("c"), Some("200"), Some("7")]),
        ];
        let t = plan.tally(&second).remove(0);
        assert_eq!(keys(&t), [(vec!["b", "200"], 1), (vec![OTHER, OTHER], 2)]);
        assert_eq!(t.capped, 2);
        assert_eq!(t.series[1].1.values, [5.0, 7.0]);
        assert_eq!(plan.metrics[0].seen.len(), 2);
    }

    #[test]
    fn a_metric_without_labels_is_one_series() {
        let mut plan = Plan::new(vec![spec(Kind::Counter, &[], 1)]);
        let rows = [row(&[]), row(&[]), row(&[])];
        let t = plan.tally(&rows).remove(0);
        assert_eq!(keys(&t), [(vec![], 3)]);
        assert_eq!(t.capped, 0);
    }

    #[test]
    fn short_rows_read_as_missing_fields() {
        // Rows come from `Plan::row`, so this cannot happen; it must still
        // not panic.
        let mut plan = Plan::new(vec![spec(histogram("Time"), &["Api"], 5)]);
        let t = plan.tally(&[row(&[])]).remove(0);
        assert_eq!((t.missing, t.series.len()), (1, 0));
    }
}
