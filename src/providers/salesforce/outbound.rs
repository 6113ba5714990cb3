//! Outbound Messages: Salesforce's SOAP notifications. They carry no signature, so each connection's endpoint
//! URL holds a secret `?token=`, compared in constant time before the body is read. A verified message becomes
//! one event per `<Notification>`, keyed by the notification's own id, so a redelivery is a duplicate; the
//! answer is the SOAP acknowledgement without which Salesforce keeps retrying for a day.

use bytes::Bytes;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::providers::{WebhookAck, WebhookError};
use crate::store::NewWebhookEvent;

const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// The only answer Salesforce takes as delivered.
const ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
 <soapenv:Body>
  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">
   <Ack>true</Ack>
  </notificationsResponse>
 </soapenv:Body>
</soapenv:Envelope>
"#;

/// The acknowledgement of a stored message.
pub fn ack() -> WebhookAck {
    WebhookAck {
        content_type: "text/xml; charset=utf-8",
        body: Bytes::from_static(ACK.as_bytes()),
    }
}

/// Checks the `token` query parameter against the connection's token. Both sides are hashed first, so the
/// comparison takes the same time whatever the length or content of what was sent.
pub fn verify_token(expected: Option<&Secret>, path_and_query: &str) -> Result<(), WebhookError> {
    let expected = expected.ok_or(WebhookError::Unauthorized(
        "webhooks are not configured for this connection",
    ))?;
    let query = path_and_query.split_once('?').map(|(_, q)| q).unwrap_or("");
    let presented = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .ok_or(WebhookError::Unauthorized("missing token"))?;
    let a = Sha256::digest(expected.expose().as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(WebhookError::Unauthorized("bad token"))
    }
}

/// One `<Notification>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: String,
    pub object: String,
    pub record_id: String,
    /// The fields the message carried (`Id` included); a nil field is null.
    pub fields: Map<String, Value>,
}

/// A whole message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub organization_id: String,
    pub action_id: Option<String>,
    pub notifications: Vec<Notification>,
}

/// A `<Notification>` being read.
#[derive(Default)]
struct Partial {
    id: Option<String>,
    object: Option<String>,
    fields: Map<String, Value>,
}

/// Reads the first attribute whose local name is `name` (`xsi:type`, `xsi:nil`), unescaped.
fn attribute(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, WebhookError> {
    for attr in e.attributes() {
        let attr = attr.map_err(|e| WebhookError::Malformed(format!("bad attribute: {e}")))?;
        if attr.key.local_name().as_ref() == name {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| WebhookError::Malformed(format!("bad attribute value: {e}")))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// A predefined XML entity.
fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parses a notifications envelope. Anything that is not one — not XML, another SOAP call, a notification
/// without its id, its object type or the record's Id — is malformed.
pub fn parse(body: &[u8]) -> Result<Message, WebhookError> {
    let malformed = |why: &str| WebhookError::Malformed(why.to_string());
    let mut reader = quick_xml::NsReader::from_reader(body);
    // Local names of the open elements, and whether <notifications> was in the outbound namespace.
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut organization_id = None;
    let mut action_id = None;
    let mut notifications = Vec::new();
    let mut current: Option<Partial> = None;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| WebhookError::Malformed(format!("not XML: {e}")))?;
        let bound = |ns: &ResolveResult<'_>, uri: &str| matches!(ns, ResolveResult::Bound(n) if n.as_ref() == uri);
        match event {
            event @ (Event::Start(_) | Event::Empty(_)) => {
                let (Event::Start(e) | Event::Empty(e)) = &event else {
                    unreachable!("matched above")
                };
                // `<a/>` opens and closes at once: it gets no End event.
                let empty = matches!(event, Event::Empty(_));
                let local = e.local_name().as_ref().to_string();
                let depth = path.len();
                let expected_ns = match depth {
                    0 | 1 => Some(SOAP_NS),
                    2 => Some(OUTBOUND_NS),
                    _ => None,
                };
                let expected_name = match depth {
                    0 => Some("Envelope"),
                    1 => Some("Body"),
                    2 => Some("notifications"),
                    _ => None,
                };
                if let (Some(uri), Some(name)) = (expected_ns, expected_name)
                    && (local != name || !bound(&ns, uri))
                {
                    return Err(malformed("not a Salesforce notifications envelope"));
                }
                if depth == 3 && local == "Notification" {
                    current = Some(Partial::default());
                }
                if depth == 4 && local == "sObject" && path[3] == "Notification" {
                    let kind = attribute(e, "type")?.ok_or_else(|| malformed("sObject without xsi:type"))?;
                    let kind = kind.rsplit(':').next().unwrap_or_default().to_string();
                    if let Some(c) = current.as_mut() {
                        c.object = Some(kind);
                    }
                }
                if empty {
                    // `<sf:Phone xsi:nil="true"/>`: a field that is empty.
                    if depth == 5
                        && path[4] == "sObject"
                        && let Some(c) = current.as_mut()
                    {
                        c.fields.insert(local, Value::Null);
                    }
                } else {
                    path.push(local);
                    text.clear();
                }
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(t) => text.push_str(&t.into_inner()),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => entity(&r).ok_or_else(|| malformed("unknown XML entity"))?,
                    Err(_) => return Err(malformed("bad character reference")),
                };
                text.push(c);
            }
            Event::End(_) => {
                let Some(local) = path.pop() else {
                    return Err(malformed("unbalanced XML"));
                };
                let value = std::mem::take(&mut text).trim().to_string();
                match (path.len(), local.as_str()) {
                    (3, "OrganizationId") => organization_id = Some(value),
                    (3, "ActionId") => action_id = Some(value),
                    (3, "Notification") => {
                        let Partial { id, object, fields } =
                            current.take().ok_or_else(|| malformed("unbalanced XML"))?;
                        let id = id
                            .filter(|s| !s.is_empty())
                            .ok_or_else(|| malformed("a Notification without its Id"))?;
                        let object = object.ok_or_else(|| malformed("a Notification without an sObject"))?;
                        let record_id = fields
                            .get("Id")
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                            .ok_or_else(|| malformed("an sObject without its Id"))?
                            .to_string();
                        notifications.push(Notification {
                            id,
                            object,
                            record_id,
                            fields,
                        });
                    }
                    (4, "Id") if path[3] == "Notification" => {
                        if let Some(c) = current.as_mut() {
                            c.id = Some(value);
                        }
                    }
                    (5, field) if path[4] == "sObject" => {
                        if let Some(c) = current.as_mut() {
                            c.fields.insert(field.to_string(), Value::String(value));
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err(malformed("the XML ends early"));
    }
    let organization_id = organization_id.ok_or_else(|| malformed("no OrganizationId"))?;
    if notifications.is_empty() {
        return Err(malformed("no Notification"));
    }
    Ok(Message {
        organization_id,
        action_id,
        notifications,
    })
}

/// Org ids compare on their first 15 characters (the 18-character form only adds a case-safe suffix).
fn same_org(a: &str, b: &str) -> bool {
    let (a, b) = (a.get(..15).unwrap_or(a), b.get(..15).unwrap_or(b));
    a == b
}

/// The events to store for a verified message: one per notification, keyed by its id.
pub fn events(message: Message, organization_id: Option<&str>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
    if let Some(expected) = organization_id
        && !same_org(expected, &message.organization_id)
    {
        return Err(WebhookError::Unauthorized("the message comes from another org"));
    }
    Ok(message
        .notifications
        .into_iter()
        .map(|n| NewWebhookEvent {
            event_id: n.id.clone(),
            object: Some(n.object.clone()),
            headers: json!({}),
            body: json!({
                "notification_id": n.id,
                "organization_id": message.organization_id,
                "action_id": message.action_id,
                "object": n.object,
                "id": n.record_id,
                "fields": n.fields,
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn envelope(notifications: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00DHu0000000001AAA</OrganizationId>
   <ActionId>04kHu0000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://x/services/Soap/c/62.0/00D</EnterpriseUrl>
   <PartnerUrl>https://x/services/Soap/u/62.0/00D</PartnerUrl>
   {notifications}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
        )
    }

    pub(super) fn notification(id: &str, object: &str, record: &str, name: &str) -> String {
        format!(
            r#"<Notification><Id>{id}</Id><sObject xsi:type="sf:{object}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>{record}</sf:Id><sf:Name>{name}</sf:Name><sf:Phone xsi:nil="true"/></sObject></Notification>"#
        )
    }

    #[test]
    fn a_message_becomes_one_event_per_notification() {
        let body = envelope(&format!(
            "{}{}",
            notification("04l1", "Account", "001A", "Smith &amp; Co &#x263A;"),
            notification("04l2", "Contact", "003B", "<![CDATA[a<b]]>")
        ));
        let message = parse(body.as_bytes()).unwrap();
        assert_eq!(message.organization_id, "00DHu0000000001AAA");
        assert_eq!(message.notifications.len(), 2);
        let first = &message.notifications[0];
        assert_eq!(
            (first.id.as_str(), first.object.as_str(), first.record_id.as_str()),
            ("04l1", "Account", "001A")
        );
        assert_eq!(first.fields["Name"], "Smith & Co \u{263A}");
        assert_eq!(first.fields["Phone"], Value::Null);
        assert_eq!(message.notifications[1].fields["Name"], "a<b");
        let events = events(message, Some("00DHu0000000001")).unwrap();
        assert_eq!(events[1].event_id, "04l2");
        assert_eq!(events[1].body["id"], "003B");
        assert_eq!(events[1].object.as_deref(), Some("Contact"));
    }

    #[test]
    fn what_is_not_a_notifications_envelope_is_malformed() {
        let no_id = envelope(
            r#"<Notification><sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>001</sf:Id></sObject></Notification>"#,
        );
        let no_record_id = envelope(
            r#"<Notification><Id>04l</Id><sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"></sObject></Notification>"#,
        );
        let no_type = envelope(
            r#"<Notification><Id>04l</Id><sObject xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>001</sf:Id></sObject></Notification>"#,
        );
        let wrong_ns = envelope(&notification("04l", "Account", "001", "x")).replace(OUTBOUND_NS, "urn:other");
        let truncated = envelope(&notification("04l", "Account", "001", "x"));
        let truncated = &truncated[..truncated.len() / 2];
        for (what, body) in [
            ("JSON", r#"{"_id": 1}"#.to_string()),
            ("empty", String::new()),
            ("no notifications", envelope("")),
            ("no notification id", no_id),
            ("no record id", no_record_id),
            ("no xsi:type", no_type),
            ("wrong namespace", wrong_ns),
            ("truncated", truncated.to_string()),
            (
                "unknown entity",
                envelope(&notification("04l", "Account", "001", "&bogus;")),
            ),
        ] {
            assert!(
                matches!(parse(body.as_bytes()), Err(WebhookError::Malformed(_))),
                "{what} should be malformed"
            );
        }
    }

    #[test]
    fn a_message_from_another_org_is_refused() {
        let message = parse(envelope(&notification("04l", "Account", "001", "x")).as_bytes()).unwrap();
        assert_eq!(
            events(message, Some("00DHu0000000002AAA")),
            Err(WebhookError::Unauthorized("the message comes from another org"))
        );
    }

    #[test]
    fn the_token_is_required_and_compared_whole() {
        let secret = Secret::new("s3cret");
        assert_eq!(verify_token(Some(&secret), "/webhooks/sf?token=s3cret"), Ok(()));
        assert_eq!(
            verify_token(Some(&secret), "/webhooks/sf?x=1&token=s3cret%21").unwrap_err(),
            WebhookError::Unauthorized("bad token")
        );
        assert_eq!(
            verify_token(Some(&secret), "/webhooks/sf?token=s3cre").unwrap_err(),
            WebhookError::Unauthorized("bad token")
        );
        assert_eq!(
            verify_token(Some(&secret), "/webhooks/sf").unwrap_err(),
            WebhookError::Unauthorized("missing token")
        );
        assert!(matches!(
            verify_token(None, "/webhooks/sf?token=s3cret"),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn the_ack_is_the_envelope_salesforce_requires() {
        let ack = ack();
        let text = std::str::from_utf8(&ack.body).unwrap();
        assert!(text.contains(r#"<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#));
        assert!(text.contains("<Ack>true</Ack>"));
        assert!(ack.content_type.starts_with("text/xml"));
    }
}
