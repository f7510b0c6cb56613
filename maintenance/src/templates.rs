//! Homeowner message templates in zh-CN and en.
//!
//! Templates are code, not configuration: the policy names one by key and the key is
//! checked when the policy loads, so a typo fails at start-up rather than at 3 a.m.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A homeowner's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lang {
    /// Simplified Chinese.
    #[serde(rename = "zh-CN")]
    ZhCn,
    /// English.
    #[serde(rename = "en")]
    En,
}

impl Lang {
    /// The BCP 47 tag.
    pub const fn as_str(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    /// Parses a tag (`zh-CN`, `zh`, `en`, `en-US`, ...).
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.to_ascii_lowercase();
        if s == "zh" || s.starts_with("zh-") {
            Some(Lang::ZhCn)
        } else if s == "en" || s.starts_with("en-") {
            Some(Lang::En)
        } else {
            None
        }
    }
}

/// A message template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// Urgent: a leak was detected.
    LeakAlert,
    /// Urgent: a leak was detected on a fixture with an inlet valve, and the gateway sent
    /// the command to close it (the engine picks it instead of `leak_alert`).
    LeakValveClosing,
    /// A wash or flush ran too long; a technician is coming.
    LongWashNotice,
    /// A fault needs an on-site visit.
    VisitNotice,
    /// Self-service: clean the inlet screen.
    InletClogGuide,
    /// Self-service: check the supply valve.
    LowPressureGuide,
    /// Self-service is pointless: several homes of one site (building) lost pressure at once,
    /// so it is the shared supply (the engine picks it instead of `low_pressure_guide` for the
    /// second home of a site incident and later ones).
    LowPressureSiteNotice,
    /// Unused for a week: clean before use.
    CleaningReminder,
    /// Several fixtures of one home unused for a week (the household is away): one message
    /// naming them (the engine picks it when a second fixture joins the home's reminder).
    CleaningReminderHome,
    /// Usage above the norm: a saving tip.
    SavingTip,
    /// A filter cartridge is due soon.
    FilterDue,
    /// The device is offline: check power and Wi-Fi.
    DeviceSilentGuide,
    /// Several fixtures of one home went offline together: the home's Wi-Fi or power.
    DeviceSilentHome,
    /// How was the service?
    SatisfactionFollowup,
}

impl Template {
    /// Parses a policy key.
    pub fn parse(s: &str) -> Option<Template> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }

    /// Renders `(title, body)` in `lang`, filling `{device}`, `{devices}` (a list),
    /// `{homes}`, `{days}`, `{slot}`, `{resource}` and `{ticket}` from `vars`.
    pub fn render(self, lang: Lang, vars: &Value) -> (String, String) {
        let (title, body) = match (self, lang) {
            (Template::LeakAlert, Lang::ZhCn) => ("紧急：检测到漏水", "设备 {device} 检测到漏水，请立即关闭进水阀。售后技师将在 4 小时内联系您。"),
            (Template::LeakAlert, Lang::En) => ("Urgent: leak detected", "Device {device} detected a leak. Please close the water supply valve now. A technician will contact you within 4 hours."),
            (Template::LeakValveClosing, Lang::ZhCn) => ("紧急：检测到漏水，已远程关闭进水阀", "设备 {device} 检测到漏水，我们已远程发送关闭其进水阀的指令。请检查设备下方是否有积水，并关闭墙上的进水角阀。售后技师将在 4 小时内联系您。"),
            (Template::LeakValveClosing, Lang::En) => ("Urgent: leak detected, inlet valve closed remotely", "Device {device} detected a leak. We have sent it the command to close its water inlet valve. Check the floor under it for water and close the supply valve at the wall. A technician will contact you within 4 hours."),
            (Template::LongWashNotice, Lang::ZhCn) => ("冲洗时间异常", "设备 {device} 的冲洗或冲水时间异常偏长，我们已安排售后上门检查。"),
            (Template::LongWashNotice, Lang::En) => ("Wash running too long", "A wash or flush on device {device} ran abnormally long. We have arranged a service visit."),
            (Template::VisitNotice, Lang::ZhCn) => ("需要上门维修", "设备 {device} 出现故障，售后技师将与您预约上门时间。"),
            (Template::VisitNotice, Lang::En) => ("Service visit needed", "Device {device} reported a fault. A technician will contact you to book a visit."),
            (Template::InletClogGuide, Lang::ZhCn) => ("请清洁进水滤网", "设备 {device} 的进水滤网可能堵塞。关闭进水阀，拧下进水软管，用软刷清洗滤网后装回即可。"),
            (Template::InletClogGuide, Lang::En) => ("Please clean the inlet screen", "The inlet screen of device {device} is clogging. Close the supply valve, unscrew the inlet hose, rinse the screen with a soft brush and refit it."),
            (Template::LowPressureGuide, Lang::ZhCn) => ("进水压力偏低", "设备 {device} 的进水压力偏低，请检查进水阀是否完全打开。"),
            (Template::LowPressureGuide, Lang::En) => ("Low water pressure", "Water pressure at device {device} is low. Please check that the supply valve is fully open."),
            (Template::LowPressureSiteNotice, Lang::ZhCn) => ("楼栋供水压力偏低", "您所在楼栋有 {homes} 户同时出现进水压力偏低，原因很可能是楼栋的供水，而不是您家中的设备，无需自行调整阀门。如持续，请联系物业。"),
            (Template::LowPressureSiteNotice, Lang::En) => ("Low water pressure in your building", "{homes} homes in your building report low water pressure at the same time. The cause is most likely the building's supply, not your fixtures, so there is nothing to adjust at home. If it lasts, contact your building management."),
            (Template::CleaningReminderHome, Lang::ZhCn) => ("清洁提醒", "您家中的设备 {devices} 已 7 天未使用，使用前建议先冲洗清洁。"),
            (Template::CleaningReminderHome, Lang::En) => ("Cleaning reminder", "Your fixtures {devices} have not been used for 7 days. We suggest a rinse and clean before use."),
            (Template::DeviceSilentHome, Lang::ZhCn) => ("设备离线", "您家中的设备 {devices} 同时离线，可能是家里的 Wi-Fi 或电源中断，请检查路由器和电源。"),
            (Template::DeviceSilentHome, Lang::En) => ("Fixtures offline", "Your fixtures {devices} went offline together. Your home's Wi-Fi or power may be down: please check the router and the power supply."),
            (Template::CleaningReminder, Lang::ZhCn) => ("清洁提醒", "设备 {device} 已 7 天未使用，使用前建议先冲洗清洁。"),
            (Template::CleaningReminder, Lang::En) => ("Cleaning reminder", "Device {device} has not been used for 7 days. We suggest a rinse and clean before use."),
            (Template::SavingTip, Lang::ZhCn) => ("节约小贴士", "本周设备 {device} 的{resource}用量高于平常，适当缩短使用时间即可节省开支。"),
            (Template::SavingTip, Lang::En) => ("A saving tip", "Device {device} used more {resource} than usual this week. Slightly shorter sessions save money."),
            (Template::FilterDue, Lang::ZhCn) => ("滤芯即将到期", "设备 {device} 的 {slot} 号滤芯将在 {days} 天后到期，请及时更换或预约上门服务。"),
            (Template::FilterDue, Lang::En) => ("Filter due soon", "The cartridge in slot {slot} of device {device} is due in {days} days. Replace it or book a visit."),
            (Template::DeviceSilentGuide, Lang::ZhCn) => ("设备离线", "设备 {device} 已离线，请检查电源和 Wi-Fi。"),
            (Template::DeviceSilentGuide, Lang::En) => ("Device offline", "Device {device} is offline. Please check its power and Wi-Fi."),
            (Template::SatisfactionFollowup, Lang::ZhCn) => ("服务满意度回访", "工单 {ticket} 已处理完毕，请为本次服务打分（1-5）。"),
            (Template::SatisfactionFollowup, Lang::En) => ("How did we do?", "Ticket {ticket} has been resolved. Please rate the service from 1 to 5."),
        };
        (fill(title, lang, vars), fill(body, lang, vars))
    }
}

fn fill(text: &str, lang: Lang, vars: &Value) -> String {
    let mut out = text.to_owned();
    for key in [
        "device", "devices", "homes", "days", "slot", "resource", "ticket",
    ] {
        let needle = format!("{{{key}}}");
        if !out.contains(&needle) {
            continue;
        }
        let value = match vars.get(key) {
            Some(Value::String(s)) if key == "resource" => match (s.as_str(), lang) {
                ("water", Lang::ZhCn) => "用水".to_owned(),
                ("energy", Lang::ZhCn) => "用电".to_owned(),
                (s, _) => s.to_owned(),
            },
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(match lang {
                    Lang::ZhCn => "、",
                    Lang::En => ", ",
                }),
            Some(v) => v.to_string(),
            None => "?".to_owned(),
        };
        out = out.replace(&needle, &value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_languages_with_variables() {
        let vars = serde_json::json!({"device": "pur-1", "slot": 2, "days": 14});
        let (_, en) = Template::FilterDue.render(Lang::En, &vars);
        assert!(
            en.contains("slot 2 of device pur-1 is due in 14 days"),
            "{en}"
        );
        let (_, zh) = Template::FilterDue.render(Lang::ZhCn, &vars);
        assert!(zh.contains("14 天后到期"), "{zh}");
        assert_eq!(Template::parse("saving_tip"), Some(Template::SavingTip));
        let vars = serde_json::json!({"devices": ["toilet-1", "shower-2"], "homes": 4});
        let (_, en) = Template::CleaningReminderHome.render(Lang::En, &vars);
        assert!(en.contains("fixtures toilet-1, shower-2 have not"), "{en}");
        let (_, zh) = Template::CleaningReminderHome.render(Lang::ZhCn, &vars);
        assert!(zh.contains("toilet-1、shower-2"), "{zh}");
        let (_, en) = Template::LowPressureSiteNotice.render(Lang::En, &vars);
        assert!(en.starts_with("4 homes in your building"), "{en}");
        assert_eq!(Lang::parse("zh-cn"), Some(Lang::ZhCn));
    }
}
