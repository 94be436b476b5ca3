//! Listeners: binding, accepting (a bounded number per turn), pausing at the connection
//! limit and resuming, and closing them when the fleet lands.

use super::*;

impl Edge {
    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            registry.register(
                &mut l.listener,
                token(KIND_LISTENER, i, l.gen),
                Interest::READABLE,
            )?;
        }
        if let Some(w) = &self.watch {
            // The slot after the last program's: no bay has it.
            registry.register(
                &mut mio::unix::SourceFd(&w.raw()),
                token(KIND_DOCK, self.bays.len(), 0),
                Interest::READABLE,
            )?;
        }
        Ok(())
    }

    /// Stops accepting and closes idle client connections; exchanges in flight go on.
    pub fn drain(&mut self, registry: &Registry) {
        self.draining = true;
        for l in &mut self.listeners {
            if l.open {
                let _ = registry.deregister(&mut l.listener);
                l.open = false;
            }
        }
        for id in 0..self.conns.len() {
            let idle = matches!(&self.conns[id], Some(c) if matches!(c.phase, Phase::Head(_)) && c.cin.is_empty() && c.cout.is_empty());
            if idle {
                self.close(id, registry);
            }
        }
    }

    /// The id of the listener in slot `slot`.
    fn listener_id(&self, slot: usize) -> Option<ConnId> {
        let gen = self.listeners.get(slot)?.gen;
        Some(ConnId { slot, gen })
    }

    /// Accepts what listener `li` has waiting, up to the cap of a turn; an id of a
    /// listener no longer there is ignored.
    pub(super) fn accept(&mut self, li: ConnId, registry: &Registry, fleet: &FleetView) {
        for taken in 0.. {
            if taken >= ACCEPTS_PER_TURN {
                if !self.accept_more.contains(&li) {
                    self.accept_more.push(li);
                }
                return;
            }
            if self.open >= self.settings.max_connections {
                if !self.accept_paused {
                    log::warn!(
                        "{} client connections open (max_connections): accepting paused",
                        self.open
                    );
                }
                self.accept_paused = true;
                return;
            }
            let Some(l) = self.listeners.get(li.slot).filter(|l| l.gen == li.gen) else {
                return;
            };
            if !l.open {
                return;
            }
            match l.listener.accept() {
                Ok((mut s, peer)) => {
                    let id = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    let gen = self.gens.next();
                    if registry
                        .register(
                            &mut s,
                            token(KIND_CLIENT, id, gen),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(id);
                        continue;
                    }
                    let proxy = match l.proxy {
                        ProxyProtocol::Off => None,
                        mode => {
                            let ip = client_addr(&peer);
                            Some(ProxyCheck {
                                trusted: ip
                                    .is_some_and(|ip| l.proxy_from.iter().any(|n| n.contains(ip))),
                                required: mode == ProxyProtocol::Required,
                            })
                        }
                    };
                    self.conns[id] = Some(Conn {
                        gen,
                        client: s,
                        peer,
                        bind: l.bind,
                        c_readable: true,
                        c_writable: true,
                        c_eof: false,
                        cin: Buf::new(),
                        cout: Buf::new(),
                        up: None,
                        phase: Phase::Head(Reading {
                            proxy,
                            ..Reading::default()
                        }),
                        dead: false,
                        served: false,
                        opened: self.now,
                        c_hup: false,
                        activity: self.now,
                        timer: None,
                        stat: None,
                        slot: None,
                    });
                    self.stats.connections_total += 1;
                    self.open += 1;
                    self.drive(id, registry, fleet);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors or memory: retry when a connection closes (the
                    // listener will not report the waiting connections again by itself).
                    log::warn!("accept: {e}; accepting paused until a connection closes");
                    self.accept_paused = true;
                    return;
                }
                Err(e) => {
                    // A connection that failed while it waited in the backlog: skip it.
                    log::debug!("accept: {e}");
                }
            }
        }
    }

    /// Resumes accepting after the connection count went under the limit.
    pub(super) fn resume_accept(&mut self, registry: &Registry, fleet: &FleetView) {
        if !self.accept_paused || self.open >= self.settings.max_connections || self.draining {
            return;
        }
        self.accept_paused = false;
        log::info!("accepting connections again ({} open)", self.open);
        for slot in 0..self.listeners.len() {
            if let Some(li) = self.listener_id(slot) {
                self.accept(li, registry, fleet);
            }
        }
    }
}
