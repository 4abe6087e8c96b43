//! Every number that crosses the control boundary (SPEC S20.4–S20.6, S1.3,
//! S8.1, S9.1), with its name.
//!
//! Owns: command, event and attribute ids, header flags, the protocol
//! version, movement states, pins, tier states, object kinds and TIER_CAPS
//! bits. Must never: renumber, reuse or remove a value. Ids are append-only
//! forever (S20.7); `tests/ids_pinned.rs` pins every one of them.
//!
//! Names: commands, events and attributes use the spec's SCREAMING_SNAKE
//! names (`MOVE_STATE`, as printed by `smoothfs events`, S26.5); states, pins,
//! tier states, object kinds and capability bits use the spec's snake_case
//! names (`plan_accepted`, `pin_hot`, `xattr_user`), which are also the store
//! strings. Every `from_name` accepts either case.

/// The only framing version this crate speaks (S20.2, S20.7/3).
pub const PROTOCOL_VERSION: u8 = 1;
/// Size of the fixed message header.
pub const HEADER_LEN: usize = 16;
/// Largest message (header included) either side may send (S20.2/1).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Attribute type bit 15: the payload is an attribute sequence.
pub const ATTR_F_NESTED: u16 = 0x8000;
/// Attribute type bit 14: reserved, must be 0.
pub const ATTR_F_RESERVED: u16 = 0x4000;
/// Bits 0–13 of an attribute type carry the id.
pub const ATTR_ID_MASK: u16 = 0x3fff;
/// Next free id in the shared command/event space (S20.7/1).
pub const NEXT_FREE_MESSAGE_ID: u16 = 30;
/// Next free attribute id (S20.7/1).
pub const NEXT_FREE_ATTR_ID: u16 = 55;

/// Defines a fieldless enum whose discriminants are wire numbers, plus the
/// lookup tables every such enum needs.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($repr)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The wire number.
            pub const fn number(self) -> $repr {
                self as $repr
            }

            /// The value for a wire number, if this crate knows it.
            pub const fn from_number(n: $repr) -> Option<Self> {
                match n {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The spec's name for this value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value for a name; ASCII case is ignored.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(name))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Header flags (S20.2/1). A plain bit set: unknown bits are kept so a
/// receiver can reject them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    pub const NONE: Flags = Flags(0);
    pub const REQUEST: Flags = Flags(0x1);
    pub const REPLY: Flags = Flags(0x2);
    pub const EVENT: Flags = Flags(0x4);
    pub const ERROR: Flags = Flags(0x8);
    /// Events were dropped before this one (S20.5).
    pub const LOSS: Flags = Flags(0x10);
    /// Every bit defined at version 1.
    pub const KNOWN: Flags = Flags(0x1f);

    pub const fn bits(self) -> u16 {
        self.0
    }

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

wire_enum! {
    /// Request commands (S20.4). Commands and events share one id space.
    pub enum Command: u16 {
        RegisterPool = 1 => "REGISTER_POOL",
        PolicyPush = 2 => "POLICY_PUSH",
        MovePlan = 3 => "MOVE_PLAN",
        TierDown = 4 => "TIER_DOWN",
        Reconcile = 5 => "RECONCILE",
        Quiesce = 6 => "QUIESCE",
        Inspect = 7 => "INSPECT",
        Reprobe = 8 => "REPROBE",
        MoveCutover = 13 => "MOVE_CUTOVER",
        RevokeMappings = 14 => "REVOKE_MAPPINGS",
        Subscribe = 16 => "SUBSCRIBE",
        Status = 17 => "STATUS",
        SetTunable = 18 => "SET_TUNABLE",
        ListObjects = 19 => "LIST_OBJECTS",
        MoveAbort = 20 => "MOVE_ABORT",
        MoveCleanup = 21 => "MOVE_CLEANUP",
        PinSet = 22 => "PIN_SET",
        TierResume = 23 => "TIER_RESUME",
        ResolvePath = 24 => "RESOLVE_PATH",
        PruneDirs = 25 => "PRUNE_DIRS",
        Scrub = 28 => "SCRUB",
        DirtyRanges = 29 => "DIRTY_RANGES",
    }
}

impl Command {
    /// Whether the command needs POOL_UUID (S20.3/1). TIER_DOWN needs it only
    /// when it carries attributes, which the handler decides.
    pub const fn requires_pool_uuid(self) -> bool {
        !matches!(
            self,
            Command::RegisterPool | Command::PolicyPush | Command::TierDown | Command::Subscribe
        )
    }
}

wire_enum! {
    /// Events (S20.5), in the id space shared with [`Command`].
    pub enum EventId: u16 {
        MountReady = 9 => "MOUNT_READY",
        HeatSample = 10 => "HEAT_SAMPLE",
        MoveState = 11 => "MOVE_STATE",
        TierFault = 12 => "TIER_FAULT",
        Spill = 15 => "SPILL",
        TierResumed = 26 => "TIER_RESUMED",
        ObjectRemoved = 27 => "OBJECT_REMOVED",
    }
}

impl EventId {
    /// This event's bit in EVENT_MASK (bit i selects event id i).
    pub const fn mask_bit(self) -> u64 {
        1u64 << (self as u16)
    }
}

/// EVENT_MASK selecting every event (the SUBSCRIBE default).
pub const EVENT_MASK_ALL: u64 = u64::MAX;

/// What a header id means in the shared command/event space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageId {
    Command(Command),
    Event(EventId),
    Unknown(u16),
}

impl MessageId {
    pub const fn from_number(n: u16) -> MessageId {
        if let Some(c) = Command::from_number(n) {
            MessageId::Command(c)
        } else if let Some(e) = EventId::from_number(n) {
            MessageId::Event(e)
        } else {
            MessageId::Unknown(n)
        }
    }

    pub const fn number(self) -> u16 {
        match self {
            MessageId::Command(c) => c.number(),
            MessageId::Event(e) => e.number(),
            MessageId::Unknown(n) => n,
        }
    }
}

wire_enum! {
    /// Attribute ids (S20.6), an id space of their own.
    pub enum Attr: u16 {
        PoolUuid = 1 => "POOL_UUID",
        PoolName = 2 => "POOL_NAME",
        Fsid = 3 => "FSID",
        TierRank = 4 => "TIER_RANK",
        TierCaps = 5 => "TIER_CAPS",
        TierPath = 6 => "TIER_PATH",
        TierId = 7 => "TIER_ID",
        ObjectId = 8 => "OBJECT_ID",
        Generation = 9 => "GENERATION",
        MovementState = 10 => "MOVEMENT_STATE",
        CurrentTier = 11 => "CURRENT_TIER",
        IntendedTier = 12 => "INTENDED_TIER",
        TransactionSeq = 13 => "TRANSACTION_SEQ",
        PinState = 14 => "PIN_STATE",
        HeatSampleBlob = 15 => "HEAT_SAMPLE_BLOB",
        CheckpointSeq = 16 => "CHECKPOINT_SEQ",
        ReconcileReason = 17 => "RECONCILE_REASON",
        Tiers = 18 => "TIERS",
        RelPath = 19 => "REL_PATH",
        Force = 20 => "FORCE",
        SizeBytes = 21 => "SIZE_BYTES",
        AnySpillSinceMount = 22 => "ANY_SPILL_SINCE_MOUNT",
        WriteSeq = 23 => "WRITE_SEQ",
        RangeStaged = 24 => "RANGE_STAGED",
        Errno = 25 => "ERRNO",
        ErrorMsg = 26 => "ERROR_MSG",
        LowerPath = 27 => "LOWER_PATH",
        PolicyPin = 28 => "POLICY_PIN",
        ObjectGen = 29 => "OBJECT_GEN",
        Nlink = 30 => "NLINK",
        PassthroughHandles = 31 => "PASSTHROUGH_HANDLES",
        MediatedHandles = 32 => "MEDIATED_HANDLES",
        Inode = 33 => "INODE",
        ObjectKind = 34 => "OBJECT_KIND",
        StagingPath = 35 => "STAGING_PATH",
        Cursor = 36 => "CURSOR",
        Limit = 37 => "LIMIT",
        Objects = 38 => "OBJECTS",
        Name = 39 => "NAME",
        Value = 40 => "VALUE",
        StatusItems = 41 => "STATUS_ITEMS",
        EventMask = 42 => "EVENT_MASK",
        TierState = 43 => "TIER_STATE",
        FaultErrno = 44 => "FAULT_ERRNO",
        FailureReason = 45 => "FAILURE_REASON",
        HardlinkGroup = 46 => "HARDLINK_GROUP",
        SinceSeq = 47 => "SINCE_SEQ",
        MtimeNs = 48 => "MTIME_NS",
        TierMask = 49 => "TIER_MASK",
        ProtocolVersion = 50 => "PROTOCOL_VERSION",
        CleanupErrno = 51 => "CLEANUP_ERRNO",
        JournalSeq = 52 => "JOURNAL_SEQ",
        Mediated = 53 => "MEDIATED",
        Passthrough = 54 => "PASSTHROUGH",
    }
}

/// The payload type of an attribute, with its limits (S20.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrType {
    U8,
    U32,
    U64,
    /// Binary of exactly this many bytes.
    Binary(usize),
    /// Opaque binary of at most this many bytes.
    BinaryMax(usize),
    /// String of at most this many bytes, excluding the terminating NUL.
    String(usize),
    /// n × 56-byte heat records, 1 ≤ n ≤ 256 (S6.3).
    HeatBlob,
    /// A list: entry i is a nested attribute with type i + 1.
    NestedList,
}

impl Attr {
    /// The payload type and limit from the S20.6 table.
    pub const fn attr_type(self) -> AttrType {
        use AttrType::*;
        match self {
            Attr::PoolUuid | Attr::ObjectId => Binary(16),
            Attr::PoolName => String(63),
            Attr::TierPath | Attr::RelPath | Attr::LowerPath | Attr::StagingPath => String(4095),
            Attr::TierId | Attr::Name => String(64),
            Attr::ReconcileReason | Attr::ErrorMsg | Attr::Value | Attr::FailureReason => {
                String(255)
            }
            Attr::HeatSampleBlob => HeatBlob,
            Attr::Cursor => BinaryMax(64),
            Attr::Tiers | Attr::Objects | Attr::StatusItems => NestedList,
            Attr::TierRank
            | Attr::MovementState
            | Attr::CurrentTier
            | Attr::IntendedTier
            | Attr::PinState
            | Attr::Force
            | Attr::AnySpillSinceMount
            | Attr::RangeStaged
            | Attr::PolicyPin
            | Attr::ObjectKind
            | Attr::TierState
            | Attr::HardlinkGroup
            | Attr::Mediated
            | Attr::Passthrough => U8,
            Attr::Fsid
            | Attr::TierCaps
            | Attr::Generation
            | Attr::Errno
            | Attr::ObjectGen
            | Attr::Nlink
            | Attr::PassthroughHandles
            | Attr::MediatedHandles
            | Attr::Limit
            | Attr::FaultErrno
            | Attr::TierMask
            | Attr::ProtocolVersion
            | Attr::CleanupErrno => U32,
            Attr::TransactionSeq
            | Attr::CheckpointSeq
            | Attr::SizeBytes
            | Attr::WriteSeq
            | Attr::Inode
            | Attr::EventMask
            | Attr::SinceSeq
            | Attr::MtimeNs
            | Attr::JournalSeq => U64,
        }
    }
}

wire_enum! {
    /// Movement states (S9.1).
    pub enum MovementState: u8 {
        Placed = 0 => "placed",
        PlanAccepted = 1 => "plan_accepted",
        DestinationReserved = 2 => "destination_reserved",
        CopyInProgress = 3 => "copy_in_progress",
        CopyComplete = 4 => "copy_complete",
        CopyVerified = 5 => "copy_verified",
        CutoverInProgress = 6 => "cutover_in_progress",
        Switched = 7 => "switched",
        CleanupInProgress = 8 => "cleanup_in_progress",
        CleanupComplete = 9 => "cleanup_complete",
        Failed = 10 => "failed",
        Stale = 11 => "stale",
    }
}

impl MovementState {
    /// Wire decoding: an unknown state byte is `failed` (S9.1, S20.7/2).
    pub const fn from_wire(n: u8) -> MovementState {
        match MovementState::from_number(n) {
            Some(s) => s,
            None => MovementState::Failed,
        }
    }
}

wire_enum! {
    /// Pin values (S8.1), shared by the data plane, the wire and the store.
    pub enum PinState: u8 {
        None = 0 => "none",
        PinHot = 1 => "pin_hot",
        PinCold = 2 => "pin_cold",
        PinHardlink = 3 => "pin_hardlink",
        PinLease = 4 => "pin_lease",
        PinLun = 5 => "pin_lun",
    }
}

impl PinState {
    /// Wire decoding: an unknown pin byte is `none` (S8.1/3, S20.7/2).
    pub const fn from_wire(n: u8) -> PinState {
        match PinState::from_number(n) {
            Some(p) => p,
            None => PinState::None,
        }
    }

    /// The slot this pin occupies (S8.1/2).
    pub const fn slot(self) -> Option<PinSlot> {
        match self {
            PinState::None => None,
            PinState::PinHot | PinState::PinCold => Some(PinSlot::Policy),
            PinState::PinHardlink => Some(PinSlot::Derived),
            PinState::PinLease | PinState::PinLun => Some(PinSlot::Protocol),
        }
    }
}

/// Where a pin lives on an object (S8.1/2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinSlot {
    Policy,
    Derived,
    Protocol,
}

wire_enum! {
    /// The policy pin slot (POLICY_PIN: 0, 1, 2), a subset of [`PinState`].
    pub enum PolicyPin: u8 {
        None = 0 => "none",
        PinHot = 1 => "pin_hot",
        PinCold = 2 => "pin_cold",
    }
}

impl PolicyPin {
    /// Wire decoding: an unknown pin byte is `none` (S8.1/3).
    pub const fn from_wire(n: u8) -> PolicyPin {
        match PolicyPin::from_number(n) {
            Some(p) => p,
            None => PolicyPin::None,
        }
    }

    pub const fn as_pin_state(self) -> PinState {
        match self {
            PolicyPin::None => PinState::None,
            PolicyPin::PinHot => PinState::PinHot,
            PolicyPin::PinCold => PinState::PinCold,
        }
    }
}

wire_enum! {
    /// Tier states (TIER_STATE, S20.6, S23).
    pub enum TierState: u8 {
        Ok = 0 => "ok",
        Faulted = 1 => "faulted",
        Down = 2 => "down",
    }
}

impl TierState {
    /// Wire decoding: an unknown tier state is treated as `faulted`, so a
    /// receiver never plans onto a tier it cannot judge.
    pub const fn from_wire(n: u8) -> TierState {
        match TierState::from_number(n) {
            Some(s) => s,
            None => TierState::Faulted,
        }
    }
}

wire_enum! {
    /// Object kinds (OBJECT_KIND, S20.6).
    pub enum ObjectKind: u8 {
        Regular = 1 => "regular",
        Directory = 2 => "directory",
        Symlink = 3 => "symlink",
        Other = 4 => "other",
    }
}

impl ObjectKind {
    /// Wire decoding: an unknown kind is `other` (never moved).
    pub const fn from_wire(n: u8) -> ObjectKind {
        match ObjectKind::from_number(n) {
            Some(k) => k,
            None => ObjectKind::Other,
        }
    }
}

wire_enum! {
    /// TIER_CAPS bit numbers (S1.3/2). The value is the bit index; use
    /// [`TierCap::bit`] for the mask.
    pub enum TierCap: u8 {
        XattrUser = 0 => "xattr_user",
        XattrTrusted = 1 => "xattr_trusted",
        XattrSecurity = 2 => "xattr_security",
        PosixAcl = 3 => "posix_acl",
        RenameAtomic = 4 => "rename_atomic",
        Hardlink = 5 => "hardlink",
        MmapCoherent = 6 => "mmap_coherent",
        DirectIo = 7 => "direct_io",
        FsyncDurable = 8 => "fsync_durable",
        SparseSeek = 9 => "sparse_seek",
        InodeGeneration = 10 => "inode_generation",
        QuotaUser = 11 => "quota_user",
        QuotaProject = 12 => "quota_project",
        Reflink = 13 => "reflink",
        CopyFileRange = 14 => "copy_file_range",
        Fscrypt = 15 => "fscrypt",
    }
}

impl TierCap {
    pub const fn bit(self) -> u32 {
        1u32 << (self as u8)
    }
}

/// A TIER_CAPS value: a set of [`TierCap`] bits. Unknown bits are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TierCaps(pub u32);

impl TierCaps {
    /// The required set (S1.3/3): xattr_user, xattr_trusted, rename_atomic,
    /// hardlink, mmap_coherent, fsync_durable.
    pub const REQUIRED: TierCaps = TierCaps(0x173);

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, cap: TierCap) -> bool {
        self.0 & cap.bit() != 0
    }

    pub const fn with(self, cap: TierCap) -> TierCaps {
        TierCaps(self.0 | cap.bit())
    }

    /// The required capabilities this set lacks (empty when it is usable).
    pub fn missing_required(self) -> Vec<TierCap> {
        TierCap::ALL
            .iter()
            .copied()
            .filter(|c| TierCaps::REQUIRED.contains(*c) && !self.contains(*c))
            .collect()
    }

    /// Names of the known bits that are set, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        TierCap::ALL
            .iter()
            .filter(|c| self.contains(**c))
            .map(|c| c.as_str())
            .collect()
    }
}

impl FromIterator<TierCap> for TierCaps {
    fn from_iter<I: IntoIterator<Item = TierCap>>(iter: I) -> TierCaps {
        iter.into_iter().fold(TierCaps(0), TierCaps::with)
    }
}
