//! Engine state, grouped by key: every feature, score and pattern keyed by the same fields
//! lives in one record per key value, so an event looks each of its keys up once, the key
//! text is held once, and a record carries its own marks of what changed since the last
//! checkpoint (no set of changed rows to hash into per update).

use rustc_hash::FxHashSet;
use smol_str::SmolStr;

use crate::anomaly::ZState;
use crate::features::FState;
use crate::patterns::PState;
use crate::records::{hash, prefetch, Records};

/// A state's key text: held inline up to 23 bytes (most keys: an id, or a customer's id and a
/// country), so a record's key costs no allocation of its own, and copying it none.
pub type Key = SmolStr;

/// Which member kinds a record holds: features, scores, patterns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Feature = 0,
    Score = 1,
    Pattern = 2,
}

/// One state of a record, with its position among the group's features, scores or patterns.
#[derive(Clone)]
pub enum Member {
    Feature(u16, FState),
    Score(u16, ZState),
    Pattern(u16, PState),
}

/// A kind of state a record holds, as a member.
pub trait Kinded: Sized {
    fn wrap(pos: u16, state: Self) -> Member;
    fn of(m: &Member, pos: u16) -> Option<&Self>;
    fn of_mut(m: &mut Member, pos: u16) -> Option<&mut Self>;
    fn unwrap(m: Member) -> Option<Self>;
}

macro_rules! kinded {
    ($state:ty, $variant:ident) => {
        impl Kinded for $state {
            fn wrap(pos: u16, state: Self) -> Member {
                Member::$variant(pos, state)
            }
            fn of(m: &Member, pos: u16) -> Option<&Self> {
                match m {
                    Member::$variant(p, s) if *p == pos => Some(s),
                    _ => None,
                }
            }
            fn of_mut(m: &mut Member, pos: u16) -> Option<&mut Self> {
                match m {
                    Member::$variant(p, s) if *p == pos => Some(s),
                    _ => None,
                }
            }
            fn unwrap(m: Member) -> Option<Self> {
                match m {
                    Member::$variant(_, s) => Some(s),
                    _ => None,
                }
            }
        }
    };
}

kinded!(FState, Feature);
kinded!(ZState, Score);
kinded!(PState, Pattern);

/// A record's states, in a slice resized one state at a time: a record's number of states
/// settles once its key is active, and a boxed slice is 8 bytes smaller than a Vec in each of
/// millions of records.
#[derive(Default)]
pub struct Members(Box<[Member]>);

impl Members {
    fn edit<T>(&mut self, f: impl FnOnce(&mut Vec<Member>) -> T) -> T {
        /// Puts the states back even if ``f`` panics (``expire``'s predicates are the
        /// engine's), so a record never silently loses the states ``f`` kept.
        struct Editing<'a>(&'a mut Box<[Member]>, Vec<Member>);
        impl Drop for Editing<'_> {
            fn drop(&mut self) {
                *self.0 = std::mem::take(&mut self.1).into_boxed_slice();
            }
        }
        let states = std::mem::take(&mut self.0).into_vec();
        let mut editing = Editing(&mut self.0, states);
        f(&mut editing.1)
    }

    fn push(&mut self, m: Member) {
        self.edit(|v| {
            v.reserve_exact(1);
            v.push(m)
        })
    }
}

impl std::ops::Deref for Members {
    type Target = [Member];
    fn deref(&self) -> &[Member] {
        &self.0
    }
}

impl std::ops::DerefMut for Members {
    fn deref_mut(&mut self) -> &mut [Member] {
        &mut self.0
    }
}

/// One key value's states of one group (present ones only, in one list: most records hold
/// one or two, and a list per kind would cost its header even empty).
#[derive(Default)]
pub struct Record {
    members: Members,
    /// Members changed since the last checkpoint: bit = the member's index in the group
    /// (features, then scores, then patterns); bit 63 stands for every member from 63 on.
    dirty: u64,
}

impl Record {
    fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Have its states' list fetched (its first and last cache lines; most hold one or two).
    pub fn prefetch(&self) {
        if let (Some(first), Some(last)) = (self.members.first(), self.members.last()) {
            prefetch(first);
            prefetch(last);
        }
    }

    /// Have what its states point to fetched (their buckets, values, partial matches).
    pub fn prefetch_states(&self) {
        for m in self.members.iter() {
            match m {
                Member::Feature(_, f) => f.prefetch(),
                Member::Score(_, z) => prefetch(z.values.as_ptr()),
                Member::Pattern(_, p) => prefetch(p.partials.as_ptr()),
            }
        }
    }
}

fn find<S: Kinded>(members: &[Member], pos: u16) -> Option<&S> {
    members.iter().find_map(|m| S::of(m, pos))
}

fn find_mut<S: Kinded>(members: &mut [Member], pos: u16) -> Option<&mut S> {
    members.iter_mut().find_map(|m| S::of_mut(m, pos))
}

fn take<S: Kinded>(members: &mut Members, pos: u16) -> Option<S> {
    let at = members.iter().position(|m| S::of(m, pos).is_some())?;
    S::unwrap(members.edit(|v| v.swap_remove(at)))
}

/// A member's state as it was before its first change since the last checkpoint (none: it
/// was not held), to undo that change: (group, key, kind, position, state).
type Saved = (usize, Key, Kind, u16, Option<Member>);

/// The member ``(kind, pos)`` of ``members``, if held, as :meth:`State::undo` puts it back.
fn member_at(members: &[Member], kind: Kind, pos: u16) -> Option<usize> {
    members.iter().position(|m| match m {
        Member::Feature(p, _) => kind == Kind::Feature && *p == pos,
        Member::Score(p, _) => kind == Kind::Score && *p == pos,
        Member::Pattern(p, _) => kind == Kind::Pattern && *p == pos,
    })
}

/// Note a change of member ``(kind, pos)`` (mark ``bit``) of record ``r`` (key ``key`` of group
/// ``g``), before it is made: the record is listed as changed the first time since the last
/// checkpoint, and the member's state kept the first time (only the members an event changes
/// are copied: a record holds many). Bit 63 stands for several members: kept each time.
fn will_change(
    changed: &mut Vec<(usize, Key)>,
    undo: &mut Option<Vec<Saved>>,
    (g, key, kind, pos, bit): (usize, &Key, Kind, u16, u64),
    r: &mut Record,
) {
    if r.dirty == 0 {
        changed.push((g, key.clone()));
    }
    if let Some(undo) = undo
        .as_mut()
        .filter(|_| r.dirty & bit == 0 || bit == 1 << 63)
    {
        let held = member_at(&r.members, kind, pos).map(|at| r.members[at].clone());
        undo.push((g, key.clone(), kind, pos, held));
    }
    r.dirty |= bit;
}

/// ``state`` as the member ``pos`` of kind ``S``: replacing it, or added (``size`` counts it).
fn place<S: Kinded>(record: &mut Record, pos: u16, size: &mut usize, state: S) {
    match find_mut::<S>(&mut record.members, pos) {
        Some(held) => *held = state,
        None => {
            *size += 1;
            record.members.push(S::wrap(pos, state));
        }
    }
}

/// The member ``pos`` of kind ``S``, added by ``new`` if missing (``added`` counts it).
fn find_or_add<'a, S: Kinded>(
    members: &'a mut Members,
    pos: u16,
    added: &mut usize,
    new: impl FnOnce() -> S,
) -> &'a mut S {
    let at = match members.iter().position(|m| S::of(m, pos).is_some()) {
        Some(at) => at,
        None => {
            *added += 1;
            members.push(S::wrap(pos, new()));
            members.len() - 1
        }
    };
    S::of_mut(&mut members[at], pos).expect("found or added above")
}

#[derive(Default)]
struct Group {
    records: Records,
    features: usize,
    scores: usize,
}

/// A changed state row: (kind, index of the definition, key, its state or None if gone).
pub enum Change<'a> {
    Feature(usize, &'a Key, Option<&'a FState>),
    Score(usize, &'a Key, Option<&'a ZState>),
    Pattern(usize, &'a Key, Option<&'a PState>),
}

/// A snapshot's walk over the records held when it began, by their place in each group's
/// list. A record changed or dropped after its place was walked is in the changelog from the
/// snapshot's start on, which restore applies over the snapshot: so the walk need not stop the
/// engine. While it runs no record is removed (one would move the last record into its place,
/// perhaps one already walked): those emptied wait in ``State::emptied``.
struct Walk {
    group: usize,
    at: usize,
    /// How many records each group held when the walk began.
    ends: Vec<usize>,
    index: Vec<[Vec<usize>; 3]>,
}

pub struct State {
    groups: Vec<Group>,
    /// (group, position) of each feature, score and pattern by its index in the pack.
    slots: [Vec<(usize, u16)>; 3],
    /// Records with changes since the last checkpoint, each once.
    changed: Vec<(usize, Key)>,
    /// How many member states are held.
    size: usize,
    walk: Option<Walk>,
    /// Records left empty while a walk ran, removed when it ends (each once, however often
    /// it was emptied: at most every record held).
    emptied: FxHashSet<(usize, Key)>,
    /// Each member changed since the undo point as it was before its first change since the
    /// point or since a take of the changes after it, for :meth:`undo`: a failed event then
    /// costs what its batch touched, not a reload of the whole state. None until the first
    /// :meth:`undo_point` (an engine whose changes are never taken, a back-test's, would keep
    /// a copy of every state it ever changed).
    undo: Option<Vec<Saved>>,
    /// How many of ``undo`` came before the last take of the changes since the point: those a
    /// commit of that take makes the store's (:meth:`take_committed`).
    taken_at: Option<usize>,
    /// A change since the last take kept no copy (expiry, restored rows)...
    undo_lost: bool,
    /// ...or one before it, since the point.
    lost_taken: bool,
}

impl State {
    /// ``groups[i]``: the key group (index into the plan's key field lists) of each feature,
    /// score and pattern.
    pub fn new(
        feature_groups: &[usize],
        score_groups: &[usize],
        pattern_groups: &[usize],
        n_groups: usize,
    ) -> State {
        let mut groups: Vec<Group> = (0..n_groups).map(|_| Group::default()).collect();
        let mut counts = vec![[0usize; 3]; n_groups];
        let mut slots: [Vec<(usize, u16)>; 3] = Default::default();
        for (kind, list) in [feature_groups, score_groups, pattern_groups]
            .iter()
            .enumerate()
        {
            for &g in list.iter() {
                slots[kind].push((g, counts[g][kind] as u16));
                counts[g][kind] += 1;
            }
        }
        for (g, c) in counts.iter().enumerate() {
            groups[g].features = c[0];
            groups[g].scores = c[1];
        }
        State {
            groups,
            slots,
            changed: Vec::new(),
            size: 0,
            walk: None,
            emptied: FxHashSet::default(),
            undo: None,
            taken_at: None,
            undo_lost: false,
            lost_taken: false,
        }
    }

    /// Group ``g``'s records (a batch fetches its later events' records ahead through it).
    pub fn group(&self, g: usize) -> &Records {
        &self.groups[g].records
    }

    fn bit(&self, kind: Kind, g: usize, pos: u16) -> u64 {
        let group = &self.groups[g];
        let index = match kind {
            Kind::Feature => pos as usize,
            Kind::Score => group.features + pos as usize,
            Kind::Pattern => group.features + group.scores + pos as usize,
        };
        1u64 << index.min(63)
    }

    fn mark(&mut self, kind: Kind, g: usize, pos: u16, key: &Key) {
        let bit = self.bit(kind, g, pos);
        if let Some(r) = self.groups[g].records.get_mut(key) {
            will_change(
                &mut self.changed,
                &mut self.undo,
                (g, key, kind, pos, bit),
                r,
            );
        }
    }

    fn record(&self, kind: Kind, i: usize, key: &str) -> Option<(&Record, u16)> {
        let (g, pos) = self.slots[kind as usize][i];
        self.groups[g].records.get(key).map(|r| (r, pos))
    }

    pub fn feature(&self, i: usize, key: &str) -> Option<&FState> {
        self.record(Kind::Feature, i, key)
            .and_then(|(r, pos)| find(&r.members, pos))
    }

    pub fn pattern(&self, i: usize, key: &str) -> Option<&PState> {
        self.record(Kind::Pattern, i, key)
            .and_then(|(r, pos)| find(&r.members, pos))
    }

    /// The record of ``key`` for member ``(kind, i)``, created if missing, marked changed;
    /// with the count of states, for a member the caller adds.
    fn touch(&mut self, kind: Kind, i: usize, key: &Key) -> (&mut Record, u16, &mut usize) {
        let (g, pos) = self.slots[kind as usize][i];
        let bit = self.bit(kind, g, pos);
        // the key is cloned only for a new record
        let record = self.groups[g].records.get_or_insert(key);
        will_change(
            &mut self.changed,
            &mut self.undo,
            (g, key, kind, pos, bit),
            record,
        );
        (record, pos, &mut self.size)
    }

    /// Feature ``i``'s state of ``key`` to update (created empty), marked changed.
    pub fn feature_mut(&mut self, i: usize, key: &Key) -> &mut FState {
        let (r, pos, size) = self.touch(Kind::Feature, i, key);
        find_or_add(&mut r.members, pos, size, FState::default)
    }

    /// Score ``i``'s state of ``key`` to update (created by ``new``), marked changed.
    pub fn score_mut(&mut self, i: usize, key: &Key, new: impl FnOnce() -> ZState) -> &mut ZState {
        let (r, pos, size) = self.touch(Kind::Score, i, key);
        find_or_add(&mut r.members, pos, size, new)
    }

    /// Pattern ``i``'s state of ``key``, taken out while an event moves it on: an empty
    /// state holds its place until :meth:`put_pattern` (most events) or
    /// :meth:`remove_pattern`, so the record's list is not resized twice an event.
    pub fn take_pattern(&mut self, i: usize, key: &Key) -> Option<PState> {
        let (g, pos) = self.slots[Kind::Pattern as usize][i];
        let bit = self.bit(Kind::Pattern, g, pos);
        let r = self.groups[g].records.get_mut(key)?;
        find::<PState>(&r.members, pos)?;
        // marked changed now, its state kept before the take: it is put back or removed
        let change = (g, key, Kind::Pattern, pos, bit);
        will_change(&mut self.changed, &mut self.undo, change, r);
        find_mut::<PState>(&mut r.members, pos).map(|held| std::mem::replace(held, PState::empty()))
    }

    /// Put back (or add) pattern ``i``'s state of ``key``, marked changed.
    pub fn put_pattern(&mut self, i: usize, key: &Key, state: PState) {
        let (r, pos, size) = self.touch(Kind::Pattern, i, key);
        place(r, pos, size, state);
    }

    /// Remove pattern ``i``'s state of ``key`` (the place a take left): marked changed when
    /// ``changed`` (the event ended it), not when the event failed.
    pub fn remove_pattern(&mut self, i: usize, key: &Key, changed: bool) {
        if changed {
            let (g, pos) = self.slots[Kind::Pattern as usize][i];
            self.mark(Kind::Pattern, g, pos, key);
        }
        self.remove(Kind::Pattern, i, key);
    }

    pub fn pattern_mut(&mut self, i: usize, key: &Key) -> Option<&mut PState> {
        let (g, pos) = self.slots[Kind::Pattern as usize][i];
        self.mark(Kind::Pattern, g, pos, key);
        self.groups[g]
            .records
            .get_mut(key)
            .and_then(|r| find_mut::<PState>(&mut r.members, pos))
    }

    /// Restore a checkpointed row: ``state`` replaces the member's state, or is added.
    fn put<S: Kinded>(&mut self, kind: Kind, i: usize, key: &Key, state: S) {
        let (g, pos) = self.slots[kind as usize][i];
        let r = self.groups[g].records.get_or_insert(key);
        place(r, pos, &mut self.size, state);
    }

    pub fn put_feature(&mut self, i: usize, key: &Key, state: FState) {
        self.put(Kind::Feature, i, key, state);
    }

    pub fn put_score(&mut self, i: usize, key: &Key, state: ZState) {
        self.put(Kind::Score, i, key, state);
    }

    pub fn restore_pattern(&mut self, i: usize, key: &Key, state: PState) {
        self.put(Kind::Pattern, i, key, state);
    }

    /// The state held now is the store's (a checkpoint was restored): :meth:`undo` comes
    /// back here. From the first call on, copies are kept.
    pub fn undo_point(&mut self) {
        self.undo.get_or_insert_with(Vec::new).clear();
        self.taken_at = None;
        self.undo_lost = false;
        self.lost_taken = false;
    }

    /// The changes were taken (for a commit): noted, so that a commit of them can move the
    /// undo point here (:meth:`take_committed`).
    pub fn taken(&mut self) {
        if let Some(undo) = &self.undo {
            self.taken_at = Some(undo.len());
            self.lost_taken |= std::mem::take(&mut self.undo_lost);
        }
    }

    /// The changes taken last go to the store: the undo point moves to that take (a change
    /// made since, by an event that failed after it, is still undone). None taken since the
    /// point: it stays.
    pub fn take_committed(&mut self) {
        if let (Some(undo), Some(at)) = (self.undo.as_mut(), self.taken_at.take()) {
            undo.drain(..at);
            self.lost_taken = false;
        }
    }

    /// Keep nothing to undo with any more, until the next :meth:`undo_point`.
    pub fn forget_undo(&mut self) {
        self.undo = None;
        self.taken_at = None;
        self.undo_lost = false;
        self.lost_taken = false;
    }

    /// Note a change that kept no copy (expiry, restored rows): until the undo point moves
    /// past it, :meth:`undo` refuses.
    pub fn lose_undo(&mut self) {
        self.undo_lost = true;
    }

    /// Put every member changed since the undo point back as it was there, the marks of
    /// change of their records cleared; return the (pattern index, key) of each pattern state
    /// put back with a deadline other than the one it had (the undone events moved or fired
    /// it), whose timer the engine arms again. None, changing nothing, when a change kept no
    /// copy.
    pub fn undo(&mut self) -> Option<Vec<(usize, Key)>> {
        if self.undo_lost || self.lost_taken {
            return None;
        }
        let mut saved = self.undo.take()?;
        let index = self.member_index();
        let mut patterns = Vec::new();
        let mut touched = Vec::new();
        // the newest first: a member kept twice (bit 63; a failed take cleared the marks) ends
        // at its first copy
        while let Some((g, key, kind, pos, held)) = saved.pop() {
            let r = self.groups[g].records.get_or_insert(&key);
            touched.push((g, key.clone()));
            r.dirty = 0;
            let now = member_at(&r.members, kind, pos);
            if let Some(Member::Pattern(_, back)) = &held {
                let deadline = |m: &Member| match m {
                    Member::Pattern(_, p) => p.deadline(),
                    _ => None,
                };
                // an unmoved deadline still has its timer (a timer is popped only to fire,
                // which clears the deadline, or to move it)
                if back.deadline().is_some()
                    && now.and_then(|at| deadline(&r.members[at])) != back.deadline()
                {
                    patterns.push((index[g][2][pos as usize], key.clone()));
                }
            }
            match (now, held) {
                (Some(at), Some(m)) => r.members[at] = m,
                (Some(at), None) => {
                    r.members.edit(|v| v.swap_remove(at));
                    self.size -= 1;
                }
                (None, Some(m)) => {
                    r.members.push(m);
                    self.size += 1;
                }
                (None, None) => {}
            }
        }
        for (g, key) in touched {
            if self.groups[g]
                .records
                .get(&key)
                .is_some_and(|r| r.is_empty())
            {
                self.drop_emptied(g, &key);
            }
        }
        self.changed.clear();
        self.undo = Some(saved); // empty: the point is where it was
        self.taken_at = None;
        Some(patterns)
    }

    /// Drop the states ``expired`` says are past their horizon; return how many.
    pub fn expire(
        &mut self,
        feature: impl Fn(usize, &FState) -> bool,
        score: impl Fn(usize, &ZState) -> bool,
        pattern: impl Fn(usize, &PState) -> bool,
    ) -> usize {
        let index = self.member_index();
        let mut dropped = 0;
        for (g, group) in self.groups.iter_mut().enumerate() {
            let (nf, ns) = (group.features, group.scores);
            for (key, r) in group.records.iter_mut() {
                let mut bits = 0u64;
                let before = r.members.len();
                r.members.edit(|v| {
                    v.retain(|m| {
                        let (expired, bit) = match m {
                            Member::Feature(p, s) => {
                                (feature(index[g][0][*p as usize], s), *p as usize)
                            }
                            Member::Score(p, s) => {
                                (score(index[g][1][*p as usize], s), nf + *p as usize)
                            }
                            Member::Pattern(p, s) => {
                                (pattern(index[g][2][*p as usize], s), nf + ns + *p as usize)
                            }
                        };
                        if expired {
                            bits |= 1u64 << bit.min(63);
                        }
                        !expired
                    })
                });
                let gone = before - r.members.len();
                dropped += gone;
                self.size -= gone;
                if bits != 0 {
                    self.undo_lost = true; // its image was not kept: expiry is no event's
                    if r.dirty == 0 {
                        self.changed.push((g, key.clone()));
                    }
                    r.dirty |= bits;
                }
            }
        }
        dropped
    }

    /// How many per-key states are held.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Each group's members by position, back to their definition's index in the pack.
    pub fn member_index(&self) -> Vec<[Vec<usize>; 3]> {
        let mut index: Vec<[Vec<usize>; 3]> =
            (0..self.groups.len()).map(|_| Default::default()).collect();
        for (kind, slots) in self.slots.iter().enumerate() {
            for (i, (g, _)) in slots.iter().enumerate() {
                index[*g][kind].push(i);
            }
        }
        index
    }

    /// Call ``emit`` with every state held (a full checkpoint).
    pub fn all_rows(&self, mut emit: impl FnMut(Change<'_>)) {
        let index = self.member_index();
        for (g, group) in self.groups.iter().enumerate() {
            for (key, r) in group.records.iter() {
                record_rows(&index[g], key, r, &mut emit);
            }
        }
    }

    /// Start a snapshot's walk over every record held now (ending one still running).
    pub fn walk_begin(&mut self) {
        self.walk_end();
        let mut walk = Walk {
            group: 0,
            at: 0,
            ends: self.groups.iter().map(|g| g.records.len()).collect(),
            index: self.member_index(),
        };
        skip_walked(&mut walk);
        self.walk = Some(walk);
    }

    /// Call ``emit`` with every state of the walk's next record (none if it was emptied
    /// since); false if there was none left, or no walk.
    pub fn walk_step(&mut self, mut emit: impl FnMut(Change<'_>)) -> bool {
        let Some(walk) = self.walk.as_mut() else {
            return false;
        };
        let Some(group) = self.groups.get(walk.group) else {
            return false;
        };
        match group.records.at(walk.at) {
            Some((key, r)) => {
                record_rows(&walk.index[walk.group], key, r, &mut emit);
                walk.at += 1;
            }
            None => walk.at = usize::MAX, // not reached: no record is removed during a walk
        }
        skip_walked(walk);
        true
    }

    /// Whether a walk was begun and has not ended.
    pub fn walking(&self) -> bool {
        self.walk.is_some()
    }

    /// Whether the walk has no records left to walk (or there is none).
    pub fn walked_all(&self) -> bool {
        self.walk
            .as_ref()
            .is_none_or(|w| w.group >= self.groups.len())
    }

    /// End the walk (done or given up): the records it kept from removal go now.
    pub fn walk_end(&mut self) {
        self.walk = None;
        for (g, key) in std::mem::take(&mut self.emptied) {
            let records = &mut self.groups[g].records;
            if records
                .get(&key)
                .is_some_and(|r| r.is_empty() && r.dirty == 0)
            {
                records.remove(&key);
            }
        }
    }

    /// Drop ``key``'s record, now empty, from group ``g``, or keep it until a running walk ends.
    fn drop_emptied(&mut self, g: usize, key: &str) {
        if self.walk.is_some() {
            self.emptied.insert((g, Key::from(key)));
        } else {
            self.groups[g].records.remove(key);
        }
    }

    /// Drop definition ``(kind, i)``'s state of ``key``: a checkpoint row saying it is gone.
    pub fn remove(&mut self, kind: Kind, i: usize, key: &str) {
        let (g, pos) = self.slots[kind as usize][i];
        let records = &mut self.groups[g].records;
        let Some(r) = records.get_mut(key) else {
            return;
        };
        let gone = match kind {
            Kind::Feature => take::<FState>(&mut r.members, pos).is_some(),
            Kind::Score => take::<ZState>(&mut r.members, pos).is_some(),
            Kind::Pattern => take::<PState>(&mut r.members, pos).is_some(),
        };
        self.size -= gone as usize;
        if r.is_empty() && r.dirty == 0 {
            self.drop_emptied(g, key);
        }
    }

    /// Call ``emit`` with each state row changed since the last call, then forget the marks
    /// (and the records left empty).
    pub fn take_changes(&mut self, mut emit: impl FnMut(Change<'_>)) {
        // each group's members, in the order of the pack, with their bits
        let mut members: Vec<Vec<(Kind, usize, u16, u64)>> = vec![Vec::new(); self.groups.len()];
        for (kind, slots) in self.slots.iter().enumerate() {
            let kind = [Kind::Feature, Kind::Score, Kind::Pattern][kind];
            for (i, (g, pos)) in slots.iter().enumerate() {
                members[*g].push((kind, i, *pos, self.bit(kind, *g, *pos)));
            }
        }
        let changed = std::mem::take(&mut self.changed);
        let mut emptied = Vec::new();
        // the records are fetched ahead, as a batch's events' are (Engine::look_ahead): the
        // slot of the record 6 places on, the pair of the one 4 on, the record of the one 2 on,
        // what its states point to for the next
        let hashes: Vec<u64> = changed.iter().map(|(_, key)| hash(key)).collect();
        let mut found: Vec<Option<usize>> = vec![None; changed.len()];
        for (j, (g, key)) in changed.iter().enumerate() {
            if let Some(&(g, _)) = changed.get(j + 6) {
                self.groups[g].records.prefetch_slot(hashes[j + 6]);
            }
            if let Some(&(g, _)) = changed.get(j + 4) {
                found[j + 4] = self.groups[g].records.prefetch_pair(hashes[j + 4]);
            }
            if let (Some(&(g, _)), Some(&Some(at))) = (changed.get(j + 2), found.get(j + 2)) {
                self.groups[g].records.prefetch_record(at);
            }
            if let (Some(&(g, _)), Some(&Some(at))) = (changed.get(j + 1), found.get(j + 1)) {
                self.groups[g].records.prefetch_states(at);
            }
            // one lookup a record: its rows, then its marks cleared
            let Some(r) = self.groups[*g].records.get_mut_hashed(key, hashes[j]) else {
                continue;
            };
            let dirty = std::mem::take(&mut r.dirty);
            let r = &*r;
            for &(kind, i, pos, bit) in &members[*g] {
                if dirty & bit == 0 {
                    continue;
                }
                emit(match kind {
                    Kind::Feature => Change::Feature(i, key, find(&r.members, pos)),
                    Kind::Score => Change::Score(i, key, find(&r.members, pos)),
                    Kind::Pattern => Change::Pattern(i, key, find(&r.members, pos)),
                });
            }
            if r.is_empty() {
                emptied.push((*g, key));
            }
        }
        for (g, key) in emptied {
            self.drop_emptied(g, key);
        }
    }

    /// Move the states of ``kept`` definitions ((kind, index here, index in ``into``)) into ``into``.
    pub fn move_into(&mut self, into: &mut State, kept: &[(Kind, usize, usize)]) {
        for &(kind, from, to) in kept {
            let (g, pos) = self.slots[kind as usize][from];
            let keys: Vec<Key> = self.groups[g].records.keys().cloned().collect();
            for key in keys {
                let Some(r) = self.groups[g].records.get_mut(&key) else {
                    continue;
                };
                match kind {
                    Kind::Feature => {
                        if let Some(s) = take::<FState>(&mut r.members, pos) {
                            self.size -= 1;
                            into.put_feature(to, &key, s);
                        }
                    }
                    Kind::Score => {
                        if let Some(s) = take::<ZState>(&mut r.members, pos) {
                            self.size -= 1;
                            into.put_score(to, &key, s);
                        }
                    }
                    Kind::Pattern => {
                        if let Some(s) = take::<PState>(&mut r.members, pos) {
                            self.size -= 1;
                            into.restore_pattern(to, &key, s);
                        }
                    }
                }
            }
        }
    }

    /// The keys of pattern ``i``'s states with an armed deadline, and the deadline.
    pub fn deadlines(&self, i: usize) -> Vec<(Key, f64)> {
        let (g, pos) = self.slots[Kind::Pattern as usize][i];
        self.groups[g]
            .records
            .iter()
            .filter_map(|(k, r)| {
                find::<PState>(&r.members, pos)
                    .and_then(|s| s.deadline())
                    .map(|d| (k.clone(), d))
            })
            .collect()
    }
}

/// Move ``walk`` past the end of each group it has walked.
fn skip_walked(walk: &mut Walk) {
    while walk.ends.get(walk.group).is_some_and(|&end| walk.at >= end) {
        walk.group += 1;
        walk.at = 0;
    }
}

fn record_rows(
    index: &[Vec<usize>; 3],
    key: &Key,
    r: &Record,
    emit: &mut impl FnMut(Change<'_>),
) -> usize {
    for m in r.members.iter() {
        emit(match m {
            Member::Feature(p, s) => Change::Feature(index[0][*p as usize], key, Some(s)),
            Member::Score(p, s) => Change::Score(index[1][*p as usize], key, Some(s)),
            Member::Pattern(p, s) => Change::Pattern(index[2][*p as usize], key, Some(s)),
        });
    }
    r.members.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_and_a_record_stay_small() {
        // millions of each are held: a byte here is megabytes of a deployment's memory
        assert_eq!(std::mem::size_of::<Key>(), 24);
        assert_eq!(std::mem::size_of::<Member>(), 56);
        assert_eq!(std::mem::size_of::<Record>(), 24);
    }

    fn walked(state: &mut State, steps: usize) -> Vec<String> {
        let mut keys = Vec::new();
        for _ in 0..steps {
            state.walk_step(|c| {
                if let Change::Feature(_, key, Some(_)) = c {
                    keys.push(key.to_string());
                }
            });
        }
        keys
    }

    #[test]
    fn a_walk_sees_each_record_once_while_others_are_dropped() {
        // one group of one feature: records k0..k9, in that order in the group's list
        let mut state = State::new(&[0], &[], &[], 1);
        let keys: Vec<Key> = (0..10).map(|i| Key::from(format!("k{i}"))).collect();
        for k in &keys {
            state.feature_mut(0, k);
        }
        state.take_changes(|_| {});
        state.walk_begin();
        let mut seen = walked(&mut state, 3);
        // dropping k1 (walked) and k5 (not yet) would move k9 and then k8 into their places,
        // k9 among the walked: the walk keeps them until it ends
        state.remove(Kind::Feature, 0, "k1");
        state.remove(Kind::Feature, 0, "k5");
        state.feature_mut(0, &Key::from("k10")); // a record added during the walk
        seen.extend(walked(&mut state, 20));
        assert!(state.walked_all() && state.walking());
        // k1 was walked before it went, k5 went before its turn, k10 came after the walk began
        let expected: Vec<String> = (0..10)
            .filter(|&i| i != 5)
            .map(|i| format!("k{i}"))
            .collect();
        let mut sorted = seen.clone();
        sorted.sort_by_key(|k| k[1..].parse::<u32>().unwrap());
        assert_eq!(sorted, expected, "each record held once: {seen:?}");
        assert_eq!(
            state.groups[0].records.len(),
            11,
            "kept until the walk ends"
        );
        state.walk_end();
        assert_eq!(state.groups[0].records.len(), 9);
        assert!(state.feature(0, "k1").is_none() && state.feature(0, "k9").is_some());
        // with no walk, an emptied record goes at once
        state.remove(Kind::Feature, 0, "k2");
        assert_eq!(state.groups[0].records.len(), 8);
    }

    #[test]
    fn an_undo_puts_back_each_member_changed_since_the_point_even_past_bit_63() {
        // one group of 70 features: members 63 on share one mark of change
        let mut state = State::new(&[0; 70], &[], &[], 1);
        let (a, b) = (Key::from("a"), Key::from("b"));
        assert!(state.undo().is_none(), "no point set: no copies kept");
        for i in [0, 65, 66] {
            state.feature_mut(i, &a).seen = i as f64;
        }
        state.take_changes(|_| {});
        state.undo_point();
        for round in 1..=2 {
            for i in [66, 65, 0, 1] {
                state.feature_mut(i, &a).seen = 1000.0 * round as f64 + i as f64;
            }
        }
        state.feature_mut(3, &b).seen = 7.0; // a record the undone events made
        state.walk_begin(); // a walk keeps the emptied record until it ends
        let undone = state.undo().expect("nothing lost");
        assert!(undone.is_empty(), "no pattern to arm again");
        let seen = |state: &State, i: usize, key: &str| state.feature(i, key).map(|f| f.seen);
        assert_eq!(seen(&state, 0, "a"), Some(0.0));
        assert_eq!(seen(&state, 65, "a"), Some(65.0));
        assert_eq!(seen(&state, 66, "a"), Some(66.0));
        assert_eq!(seen(&state, 1, "a"), None, "not held at the point");
        assert_eq!(seen(&state, 3, "b"), None);
        assert_eq!(state.len(), 3);
        let mut rows = 0;
        state.take_changes(|_| rows += 1);
        assert_eq!(rows, 0, "no mark of change is left");
        assert_eq!(state.groups[0].records.len(), 2);
        state.walk_end();
        assert_eq!(state.groups[0].records.len(), 1);
        state.lose_undo();
        assert!(state.undo().is_none(), "a change kept no copy");
    }

    #[test]
    fn a_record_keeps_its_states_when_an_edit_panics() {
        let mut members = Members::default();
        for pos in 0..3 {
            members.push(Member::Feature(pos, FState::default()));
        }
        let edited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            members.edit(|states| {
                states
                    .retain(|m| !matches!(m, Member::Feature(2, _)) || panic!("a predicate failed"))
            })
        }));
        assert!(edited.is_err());
        assert_eq!(members.len(), 3);
    }
}
