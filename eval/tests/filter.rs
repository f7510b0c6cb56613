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

#[test]
fn the_heldout_protocol_prints_selection_and_heldout_tables_per_family() {
    let base = harness::EvalConfig {
        devices: 24,
        days: 60,
        horizons: vec![30, 14, 7],
        ..Default::default()
    };
    let mut cfg = harness::HeldOutConfig::standard(base);
    cfg.families = vec!["low_loss".into(), "resets".into()];
    cfg.selection_seeds = vec![3];
    cfg.heldout_seeds = vec![4];
    cfg.grid.truncate(2);
    let mut lines = 0;
    let out = harness::heldout(&cfg, |_| lines += 1).expect("protocol runs");
    eprintln!("{out}");
    assert_eq!(lines, 4, "one progress line per family and seed");
    for fam in ["low_loss", "resets"] {
        assert!(
            out.contains(&format!("### held out: family {fam}")),
            "{out}"
        );
        assert!(
            out.contains(&format!("held out (family {fam}, seeds [4])")),
            "{out}"
        );
    }
    assert_eq!(out.matches("selection (other families").count(), 2, "{out}");
    assert!(out.contains("all families pooled"), "{out}");
    assert!(out.contains("| 30 d |"), "no 30-day queries: {out}");
}

#[test]
fn cartridge_families_parse_and_bad_ones_are_refused() {
    use simulator::device::CartridgeMix;
    for f in CartridgeMix::FAMILIES {
        assert!(CartridgeMix::parse(f).is_ok(), "{f}");
    }
    let m = CartridgeMix::parse("rated=0.3,loss=0.02-0.05,lossy=1,reboots=2").unwrap();
    assert_eq!(m.flow_loss, (0.02, 0.05));
    assert_eq!(m.lossy_reboots, 1.0);
    assert!(CartridgeMix::parse("loss=0.5-0.1").is_err());
    assert!(CartridgeMix::parse("colour=blue").is_err());
    assert!(CartridgeMix::parse("rated=2").is_err());
}
