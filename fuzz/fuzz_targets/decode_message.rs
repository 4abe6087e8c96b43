//! Feeds arbitrary bytes to every decoder a peer can reach (S20/A2): the
//! request decoder the data plane runs, and the reply and event decoders
//! the client runs. Any panic is a finding. Where decoding succeeds, the
//! typed value must survive a re-encode unchanged.
//!
//! Each input is tried twice: as sent, and with the header's length and
//! version fixed up, so mutations reach the attribute parser instead of
//! dying on the framing checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smoothfs_uapi::codec::{decode_message, decode_reply, decode_request};
use smoothfs_uapi::event::{Event, decode_event};

fn exercise(data: &[u8]) {
    match decode_request(data) {
        Ok(req) => {
            // Walk every attribute through every accessor, as a handler might.
            for a in req.attrs.iter() {
                let _ = a.as_u8();
                let _ = a.as_u32();
                let _ = a.as_u64();
                let _ = a.as_str();
                let _ = a.as_path();
                if let Ok(list) = a.as_list() {
                    for entry in list.flatten() {
                        let _ = entry.validate();
                    }
                }
            }
        }
        Err(e) => {
            // Every refusal must become a well-formed error reply.
            assert!(e.errno > 0);
            let reply = e.to_reply();
            let msg = decode_message(&reply).expect("error reply must decode");
            assert_eq!(msg.header.seq, e.seq);
        }
    }

    let _ = decode_reply(data);

    if let Ok(ev) = decode_event(data) {
        if !matches!(ev.event, Event::Unknown(_)) {
            if let Ok(bytes) = ev.event.encode(ev.seq, ev.loss) {
                let again = decode_event(&bytes).expect("re-encoded event must decode");
                assert_eq!(again, ev);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if data.len() >= 16 {
        let mut fixed = data.to_vec();
        let len = fixed.len() as u32;
        fixed[0..4].copy_from_slice(&len.to_le_bytes());
        fixed[12] = 1;
        exercise(&fixed);
    }
});
