//! Small, fast evaluation of the fault rules on a simulated fleet with many faults:
//! every kind that has truth is found, and nearly nothing else is.

use eval::fault as harness;

use simulator::faults::FaultMix;

#[test]
fn rules_find_the_injected_faults_of_a_small_fleet() {
    let cfg = harness::EvalConfig {
        devices: 60,
        days: 40,
        mix: FaultMix::parse(
            "leak=0.3,valve_stuck=0.3,heater_failure=0.3,sensor_dropout=0.3,unused=0.3,offline=0.3,low_pressure=0.3,main_board=0.3",
        )
        .expect("valid mix"),
        ..Default::default()
    };
    let report = harness::run(&cfg, |_| {}).expect("evaluation runs");
    eprintln!("{}", harness::format_report(&cfg, &report));
    let mut judged = 0;
    for key in [
        "leak",
        "long_wash",
        "heater_fault",
        "sensor_fault",
        "unused_7_days",
        "device_silent",
        "low_inlet_pressure",
        "main_board_fault",
    ] {
        let k = &report.kinds[key];
        if k.truths == 0 {
            continue;
        }
        judged += 1;
        assert!(k.recall() >= 0.9, "{key}: recall {:.2}", k.recall());
        assert!(
            k.precision() >= 0.9,
            "{key}: precision {:.2}",
            k.precision()
        );
    }
    assert!(judged >= 6, "too few kinds with truth: {judged}");
    assert!(report.state_bytes < 1024);
}

/// Every world variant at once (burst cadence, silent firmware, shared showers, clocks
/// hours off, small and night leaks, cleaning programmes): the confounders raise
/// nothing and the leaks and silences are still found.
#[test]
fn confounders_of_every_variant_raise_nothing_and_faults_are_still_found() {
    let cfg = harness::EvalConfig {
        devices: 48,
        days: 30,
        seed: 11,
        mix: FaultMix::parse("leak=0.4,offline=0.3,valve_stuck=0.2").expect("valid mix"),
        variants: simulator::fleet::Variants::parse("all=0.5").expect("valid variants"),
        ..Default::default()
    };
    let report = harness::run(&cfg, |_| {}).expect("evaluation runs");
    eprintln!("{}", harness::format_report(&cfg, &report));
    let ticket_fp: usize = harness::TICKET_KINDS
        .iter()
        .map(|k| report.kinds[*k].false_positives)
        .sum();
    assert!(ticket_fp <= 1, "{ticket_fp} false tickets");
    for key in ["leak", "device_silent"] {
        let k = &report.kinds[key];
        assert!(k.truths >= 3, "{key}: too little truth ({})", k.truths);
        assert!(k.recall() >= 0.8, "{key}: recall {:.2}", k.recall());
    }
}

/// Heater failures on firmware that raises no codes, and heaters wearing out over days:
/// the analytics find them from the tank temperature and the heater energy alone, and
/// raise no heater finding elsewhere.
#[test]
fn dead_and_wearing_heaters_are_found_without_a_device_code() {
    let cfg = harness::EvalConfig {
        devices: 90,
        days: 30,
        seed: 23,
        mix: FaultMix::parse("heater_failure=0.6,sensor_dropout=0.2,offline=0.2")
            .expect("valid mix"),
        variants: simulator::fleet::Variants::parse("silent_firmware=0.6,heater_wear=0.5")
            .expect("valid variants"),
        ..Default::default()
    };
    let report = harness::run(&cfg, |_| {}).expect("evaluation runs");
    eprintln!("{}", harness::format_report(&cfg, &report));
    let k = &report.kinds["heater_fault"];
    assert!(k.truths >= 8, "too little truth ({})", k.truths);
    assert!(k.recall() >= 0.9, "heater recall {:.2}", k.recall());
    assert_eq!(k.false_positives, 0);
}
