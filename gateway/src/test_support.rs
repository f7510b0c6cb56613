//! Fixtures shared by the gateway's unit tests.

use maintenance::registry::{Channel, Device, Home, Owner};
use maintenance::{Engine, EngineConfig, Policy};
use protocol::message::Model;

/// An in-memory maintenance engine with home `h1` (Shanghai, app push) and its `toilet-1`.
pub(crate) fn engine_with_a_toilet() -> Engine {
    let engine = Engine::in_memory(EngineConfig {
        policy: Policy::default(),
        ticket_webhooks: Vec::new(),
    })
    .expect("engine");
    engine
        .put_home(&Home {
            site: None,
            id: "h1".into(),
            address: "1 Road".into(),
            region: "sh".into(),
            tz: "Asia/Shanghai".into(),
            lang: maintenance::templates::Lang::En,
            quiet_start: "22:00".into(),
            quiet_end: "08:00".into(),
            weekly_cap: None,
            channels: vec![Channel::App],
            owner: Owner {
                name: "A".into(),
                phone: "13812341234".into(),
                email: None,
            },
        })
        .expect("home");
    engine
        .put_device(&Device {
            id: "toilet-1".into(),
            home_id: "h1".into(),
            model: Model::Toilet,
            installed_ts_ms: 0,
            cartridges: Vec::new(),
        })
        .expect("device");
    engine
}
