//! Small, fast evaluation of the filter due-date forecaster on a simulated fleet:
//! it must beat the straight-line baseline.

use eval::filter as harness;

#[test]
fn forecaster_beats_the_straight_line_on_a_small_fleet() {
    let cfg = harness::EvalConfig {
        devices: 40,
        days: 60,
        ..Default::default()
    };
    let report = harness::run(&cfg).expect("evaluation runs");
    eprintln!("{}", harness::format_report(&cfg, &report));
    let (mut fc, mut line, mut n) = (0.0, 0.0, 0usize);
    for h in &report.horizons {
        fc += h.forecaster.errors.iter().map(|e| e.abs()).sum::<f64>();
        line += h.line.errors.iter().map(|e| e.abs()).sum::<f64>();
        n += h.n();
    }
    assert!(n >= 10, "too few queries: {n}");
    assert!(
        fc < line,
        "forecaster total abs error {fc:.1} d vs straight line {line:.1} d over {n} queries"
    );
}
