//! The default policy: who may do what to which name (DESIGN.md §7). The same rules apply
//! to presence room ids, message channels and metadata channel names.
//!
//! - An unverified principal (open mode, or the host's own calls) may do anything: with no
//!   key configured anyone is whoever they say.
//! - `role: "admin"` may do anything.
//! - The token's `rooms` claim, when present, narrows everything else to the names it lists
//!   (`*` at the end is a wildcard: `team:7:*`).
//! - `public:*`: any authenticated user. `private:*`: needs the `private_channel_access`
//!   permission. `user:<id>` and `user:<id>:*`: only the user `<id>`. `system:*`: anyone may
//!   join, read and subscribe; only an admin may publish, write metadata or take locks. Any
//!   other name: any authenticated user, so existing room names keep working.
//!
//! A refusal is `FORBIDDEN` with the reason.

use crate::fail;
use crate::types::{Action, ErrorCode, Failure, Principal};

/// The permission `private:*` names need.
pub const PRIVATE_PERMISSION: &str = "private_channel_access";

/// The role that may do anything.
pub const ADMIN: &str = "admin";

/// Whether `name` matches `pattern` (exact, or a prefix when the pattern ends in `*`).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether the principal is an admin.
pub fn is_admin(principal: &Principal) -> bool {
    principal.verified && principal.role.as_deref() == Some(ADMIN)
}

fn forbidden(message: String) -> Failure {
    fail::failure(ErrorCode::Forbidden, message)
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Join => "join",
        Action::Read => "read",
        Action::Subscribe => "subscribe to",
        Action::Publish => "publish to",
        Action::MetadataRead => "read the metadata of",
        Action::MetadataWrite => "write the metadata of",
        Action::Lock => "lock",
    }
}

/// Allowed, or refused with the reason.
pub fn decide(principal: &Principal, action: Action, name: &str) -> Result<(), Failure> {
    if !principal.verified || is_admin(principal) {
        return Ok(());
    }
    let user = principal.user_id.as_deref().unwrap_or_default();
    let verb = verb(action);
    if let Some(rooms) = &principal.rooms
        && !rooms.iter().any(|pattern| matches(pattern, name))
    {
        return Err(forbidden(format!(
            "the token's rooms claim does not let {user:?} {verb} {name:?}"
        )));
    }
    if name.starts_with("private:")
        && !principal
            .permissions
            .iter()
            .any(|permission| permission == PRIVATE_PERMISSION)
    {
        return Err(forbidden(format!(
            "{name:?} is private: {verb} it needs the {PRIVATE_PERMISSION} permission"
        )));
    }
    if let Some(rest) = name.strip_prefix("user:") {
        let owner = rest.split(':').next().unwrap_or_default();
        if owner != user {
            return Err(forbidden(format!(
                "{name:?} belongs to user {owner:?}; only they may {verb} it"
            )));
        }
    }
    if name.starts_with("system:")
        && matches!(
            action,
            Action::Publish | Action::MetadataWrite | Action::Lock
        )
    {
        return Err(forbidden(format!(
            "{name:?} is a system channel: only an admin may {verb} it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Principal {
        Principal {
            user_id: Some(id.into()),
            verified: true,
            role: None,
            permissions: Vec::new(),
            rooms: None,
        }
    }

    const ALL: [Action; 7] = [
        Action::Join,
        Action::Read,
        Action::Subscribe,
        Action::Publish,
        Action::MetadataRead,
        Action::MetadataWrite,
        Action::Lock,
    ];

    fn allowed(principal: &Principal, action: Action, name: &str) -> bool {
        decide(principal, action, name).is_ok()
    }

    /// Open mode and admins may do anything anywhere.
    #[test]
    fn open_mode_and_admins() {
        let open = Principal {
            user_id: None,
            verified: false,
            role: None,
            permissions: Vec::new(),
            rooms: Some(vec!["nothing".into()]),
        };
        let mut admin = user("root");
        admin.role = Some(ADMIN.into());
        admin.rooms = Some(Vec::new());
        for name in ["private:x", "user:bob", "system:ops", "lobby"] {
            for action in ALL {
                assert!(allowed(&open, action, name));
                assert!(allowed(&admin, action, name));
            }
        }
    }

    /// Each prefix's rule, for every action.
    #[test]
    fn channel_rules() {
        let ada = user("ada");
        let mut insider = user("eve");
        insider.permissions = vec![PRIVATE_PERMISSION.into()];
        for action in ALL {
            assert!(allowed(&ada, action, "public:news"));
            assert!(allowed(&ada, action, "lobby"));
            assert!(!allowed(&ada, action, "private:board"));
            assert!(allowed(&insider, action, "private:board"));
            assert!(allowed(&ada, action, "user:ada"));
            assert!(allowed(&ada, action, "user:ada:inbox"));
            assert!(!allowed(&ada, action, "user:bob"));
            assert!(!allowed(&ada, action, "user:bob:inbox"));
            assert!(
                !allowed(&ada, action, "user:adam"),
                "a prefix of another id"
            );
        }
        for action in [
            Action::Join,
            Action::Read,
            Action::Subscribe,
            Action::MetadataRead,
        ] {
            assert!(allowed(&ada, action, "system:status"));
        }
        for action in [Action::Publish, Action::MetadataWrite, Action::Lock] {
            let refusal = decide(&ada, action, "system:status").unwrap_err();
            assert_eq!(refusal.code, ErrorCode::Forbidden);
            assert!(
                refusal.message.contains("only an admin"),
                "{}",
                refusal.message
            );
        }
    }

    /// The rooms claim narrows every rule, with `*` as a trailing wildcard.
    #[test]
    fn the_rooms_claim_narrows() {
        let mut ada = user("ada");
        ada.rooms = Some(vec!["game-42".into(), "team:7:*".into()]);
        assert!(allowed(&ada, Action::Join, "game-42"));
        assert!(!allowed(&ada, Action::Join, "game-43"));
        assert!(allowed(&ada, Action::Publish, "team:7:chat"));
        assert!(!allowed(&ada, Action::Publish, "team:8:chat"));
        assert!(
            !allowed(&ada, Action::Join, "public:news"),
            "narrows public names too"
        );
        ada.rooms = Some(vec!["private:*".into()]);
        assert!(
            !allowed(&ada, Action::Join, "private:x"),
            "and keeps the other rules"
        );
    }

    /// Patterns: exact names, or prefixes ending in `*`.
    #[test]
    fn patterns() {
        assert!(matches("a", "a"));
        assert!(!matches("a", "ab"));
        assert!(matches("a*", "ab"));
        assert!(matches("*", "anything"));
        assert!(!matches("a*", "b"));
    }
}
