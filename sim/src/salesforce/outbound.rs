//! Outbound Messages as Salesforce sends them: a SOAP `notifications` envelope of up to 100 `<Notification>`s,
//! each with its own id and the record's selected fields, POSTed unsigned as `text/xml`. Delivery counts only
//! when the answer is 200 with `<Ack>true</Ack>` inside `notificationsResponse`; anything else is retried.

use quick_xml::escape::escape;
use serde_json::{Map, Value};

/// Salesforce puts at most this many notifications in one message.
pub const MAX_NOTIFICATIONS: usize = 100;

/// One notification: a record of `object` as it was when the workflow fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The notification's own id (`04l...`): a redelivery carries the same one.
    pub id: String,
    pub object: String,
    /// `Id` and the fields the outbound message selects.
    pub record: Map<String, Value>,
}

/// What the endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub status: u16,
    /// Whether the answer was the acknowledgement Salesforce requires; otherwise it retries.
    pub acked: bool,
}

/// The SOAP envelope Salesforce POSTs for `notifications`.
pub fn envelope(organization_id: &str, action_id: &str, instance: &str, notifications: &[Notification]) -> String {
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
"#,
    );
    xml.push_str(&format!(
        "   <OrganizationId>{}</OrganizationId>\n   <ActionId>{}</ActionId>\n   <SessionId xsi:nil=\"true\"/>\n   \
         <EnterpriseUrl>{instance}/services/Soap/c/62.0/{org}</EnterpriseUrl>\n   \
         <PartnerUrl>{instance}/services/Soap/u/62.0/{org}</PartnerUrl>\n",
        escape(organization_id),
        escape(action_id),
        instance = escape(instance),
        org = escape(organization_id),
    ));
    for n in notifications {
        xml.push_str(&format!(
            "   <Notification>\n    <Id>{}</Id>\n    <sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n",
            escape(&n.id),
            escape(&n.object)
        ));
        for (field, value) in &n.record {
            match value {
                Value::Null => xml.push_str(&format!("     <sf:{field} xsi:nil=\"true\"/>\n")),
                Value::String(s) => xml.push_str(&format!("     <sf:{field}>{}</sf:{field}>\n", escape(s))),
                other => xml.push_str(&format!(
                    "     <sf:{field}>{}</sf:{field}>\n",
                    escape(other.to_string())
                )),
            }
        }
        xml.push_str("    </sObject>\n   </Notification>\n");
    }
    xml.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    xml
}

/// Whether an answer body is the acknowledgement Salesforce accepts: a `notificationsResponse` element in the
/// outbound namespace whose `Ack` is `true`.
pub fn is_ack(body: &[u8]) -> bool {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    const OUTBOUND: &str = "http://soap.sforce.com/2005/09/outbound";
    let mut reader = quick_xml::NsReader::from_reader(body);
    let mut in_response = false;
    let mut in_ack = false;
    loop {
        match reader.read_resolved_event() {
            Ok((ns, Event::Start(e))) => {
                let outbound = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == OUTBOUND);
                match e.local_name().as_ref() {
                    "notificationsResponse" if outbound => in_response = true,
                    "Ack" if in_response => in_ack = true,
                    _ => {}
                }
            }
            Ok((_, Event::Text(t))) if in_ack => {
                return t.xml10_content().trim() == "true";
            }
            Ok((_, Event::End(_))) => in_ack = false,
            Ok((_, Event::Eof)) | Err(_) => return false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_escapes_values_and_names_the_type() {
        let n = Notification {
            id: "04lHu0000000001AAA".into(),
            object: "Account".into(),
            record: json!({"Id": "001Hu0000000001AAA", "Name": "A & <B>", "Phone": null})
                .as_object()
                .unwrap()
                .clone(),
        };
        let xml = envelope("00DHu0000000001AAA", "04kHu0000000001AAA", "https://x", &[n]);
        assert!(xml.contains("<sf:Name>A &amp; &lt;B&gt;</sf:Name>"), "{xml}");
        assert!(xml.contains("xsi:type=\"sf:Account\""));
        assert!(xml.contains("<sf:Phone xsi:nil=\"true\"/>"));
    }

    #[test]
    fn only_a_true_ack_in_the_outbound_namespace_counts() {
        let ack = br#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#;
        assert!(is_ack(ack));
        let nack = String::from_utf8_lossy(ack).replace(">true<", ">false<");
        assert!(!is_ack(nack.as_bytes()));
        let wrong_ns = String::from_utf8_lossy(ack).replace("2005/09/outbound", "other");
        assert!(!is_ack(wrong_ns.as_bytes()));
        assert!(!is_ack(br#"{"accepted": 1}"#));
    }
}
