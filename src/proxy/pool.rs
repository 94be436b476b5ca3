//! The upstream side: connecting to a backend, and the pool of idle keep-alive
//! upstream connections (by backend key, oldest dropped first, each with an idle timer).

use super::*;

impl Edge {
    pub(super) fn drop_idle(&mut self, id: usize, registry: &Registry) {
        if let Some(Some(idle)) = self.idle.get_mut(id).map(Option::take) {
            self.timers.cancel(idle.timer);
            self.pool.remove(&idle.up.key, id);
            self.close_up(idle.up, registry);
        }
    }

    /// Closes an upstream connection and frees its id.
    pub(super) fn close_up(&mut self, mut up: Up, registry: &Registry) {
        let _ = registry.deregister(&mut up.stream);
        for b in [&mut up.uin, &mut up.uout] {
            b.clear();
            self.bufs.take_back(b);
        }
        if let Some(o) = self.up_owner.get_mut(up.id) {
            *o = Owner::Free;
            self.up_free.push(up.id);
        }
    }

    pub(super) fn new_up_id(&mut self, conn: usize) -> usize {
        let id = self.up_free.pop().unwrap_or_else(|| {
            self.up_owner.push(Owner::Free);
            self.idle.push(None);
            self.up_owner.len() - 1
        });
        self.up_owner[id] = Owner::Conn(conn);
        id
    }

    /// Starts a connection to a backend for connection `conn`.
    pub(super) fn connect_up(
        &mut self,
        addr: &BindAddr,
        key: Rc<str>,
        conn: usize,
        registry: &Registry,
    ) -> io::Result<Up> {
        let mut s = Stream::connect(addr)?;
        let up_id = self.new_up_id(conn);
        let gen = self.gens.next();
        if let Err(e) = registry.register(
            &mut s,
            token(KIND_UPSTREAM, up_id, gen),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.up_owner[up_id] = Owner::Free;
            self.up_free.push(up_id);
            return Err(e);
        }
        Ok(Up {
            id: up_id,
            gen,
            stream: s,
            addr: addr.clone(),
            reused: false,
            key,
            since: self.now,
            readable: false,
            writable: false,
            hup: false,
            write_failed: false,
            connected: false,
            eof: false,
            uin: Buf::new(),
            uout: Buf::new(),
        })
    }

    /// The pool key of program `target`'s backend at `addr`.
    pub(super) fn key_of(&mut self, target: ProgramId, addr: &BindAddr) -> Rc<str> {
        let target = target.index();
        if self.keys.len() <= target {
            self.keys.resize(target + 1, None);
        }
        match &self.keys[target] {
            Some((a, k)) if a == addr => k.clone(),
            _ => {
                let k: Rc<str> = addr.to_string().into();
                self.keys[target] = Some((addr.clone(), k.clone()));
                k
            }
        }
    }

    /// The oldest idle upstream to `key` that is still quiet. The oldest, because the
    /// events of its socket have surely been seen; quiet, checked with a non-blocking
    /// peek: a connection with unread bytes (a backend that answered more than it
    /// announced, or left a body unread and answered it) or at end of stream would hand
    /// the next client someone else's answer, so it is closed instead.
    pub(super) fn take_idle(&mut self, key: &str, conn: usize, registry: &Registry) -> Option<Up> {
        loop {
            let up_id = self.pool.take_oldest(key)?;
            let idle = self.idle.get_mut(up_id)?.take()?;
            self.timers.cancel(idle.timer);
            self.up_owner[up_id] = Owner::Conn(conn);
            if !idle.up.stream.is_quiet() {
                log::debug!("pooled connection to {key} has unread bytes or ended; closed");
                self.close_up(idle.up, registry);
                continue;
            }
            return Some(self.reuse(idle.up));
        }
    }

    pub(super) fn reuse(&mut self, mut up: Up) -> Up {
        // Writable readiness seen while pooled was not recorded; readable readiness reported
        // while pooled drops the connection. `readable` keeps what it was when pooled: false
        // after a read that drained the socket, true if bytes may be left. No read right
        // after the request is written: the answer cannot be there yet. It raises a new
        // edge, and the end of the turn reads once (see `tick`).
        up.writable = true;
        up.since = self.now;
        up.reused = true;
        up
    }

    pub(super) fn put_idle(&mut self, mut up: Up, registry: &Registry) {
        let id = up.id;
        self.bufs.take_back(&mut up.uin);
        self.bufs.take_back(&mut up.uout);
        let timer = self.timers.insert(
            deadline(self.now, self.settings.pool_idle_timeout),
            TimerKey::Idle(id),
        );
        self.up_owner[id] = Owner::Idle;
        let oldest = self.pool.put(&up.key, id);
        self.idle[id] = Some(Idle { up, timer });
        if let Some(oldest) = oldest {
            self.drop_idle(oldest, registry);
        }
    }
}

/// The ids of idle upstreams by backend key, oldest first, at most `cap` per key: the
/// pool's bookkeeping, apart from the sockets and timers the edge keeps by id.
pub(super) struct IdleLists {
    lists: HashMap<Rc<str>, VecDeque<usize>>,
    cap: usize,
}

impl IdleLists {
    pub fn new(cap: usize) -> IdleLists {
        IdleLists {
            lists: HashMap::new(),
            cap,
        }
    }

    /// Adds `id` as the newest for `key`; over the cap, the oldest leaves the list and is
    /// returned (for the caller to close).
    pub fn put(&mut self, key: &Rc<str>, id: usize) -> Option<usize> {
        let list = self.lists.entry(Rc::clone(key)).or_default();
        list.push_back(id);
        if list.len() > self.cap {
            list.pop_front()
        } else {
            None
        }
    }

    /// The oldest idle id for `key`, taken off the list.
    pub fn take_oldest(&mut self, key: &str) -> Option<usize> {
        self.lists.get_mut(key)?.pop_front()
    }

    /// `id` is no longer idle (its timer fired, or its backend closed it).
    pub fn remove(&mut self, key: &str, id: usize) {
        if let Some(list) = self.lists.get_mut(key) {
            list.retain(|&x| x != id);
        }
    }

    /// Idle upstreams, all keys together.
    pub fn len(&self) -> usize {
        self.lists.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_upstreams_are_taken_oldest_first_and_bounded_per_backend() {
        let (a, b): (Rc<str>, Rc<str>) = ("a:1".into(), "b:1".into());
        let mut p = IdleLists::new(2);
        assert_eq!(p.put(&a, 1), None);
        assert_eq!(p.put(&b, 7), None);
        assert_eq!(p.put(&a, 2), None);
        assert_eq!(p.len(), 3);
        assert_eq!(p.put(&a, 3), Some(1), "over the cap the oldest goes");
        assert_eq!(p.take_oldest("a:1"), Some(2));
        p.remove("a:1", 3);
        assert_eq!(p.take_oldest("a:1"), None);
        assert_eq!(
            p.take_oldest("b:1"),
            Some(7),
            "each backend has its own list"
        );
        assert_eq!(p.take_oldest("c:1"), None);
        p.remove("c:1", 1);
        assert_eq!(p.len(), 0);
    }
}
