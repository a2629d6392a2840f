#if canImport(Glibc)
import Glibc
#endif

/// Spans whose owner is gone (an ended thread, a dead process) are given
/// up onto the heap's abandoned stacks, where other owners adopt them.
extension OpenPool {
    /// Gives up every span a lane owns: empty ones go back to the pool, the
    /// others onto the heap's abandoned stacks. Global lock held.
    func abandon(_ lane: UnsafeHeapLane, heap: Int) {
        let owned = lane.spans
        for sizeClass in 0..<SizeClass.count {
            for address in owned.byClass[sizeClass] { abandonSpan(address, heap: heap) }
            owned.byClass[sizeClass].removeAll()
            lane.setCurrent(sizeClass, nil, address: 0)
        }
    }

    /// Global lock held.
    func abandonSpan(_ address: UInt64, heap: Int) {
        let span = spanView(address)
        span.drainRemote()
        span.owner = 0
        if span.used == 0 {
            releaseCached(address, spanLength(address))
        } else {
            pushAbandoned(address, span, heap: heap)
        }
    }

    func spanLength(_ address: UInt64) -> Int {
        let (table, page) = location(of: address)
        return table.entry(page).length
    }

    func pushAbandoned(_ address: UInt64, _ span: UnsafeSpan, heap: Int) {
        let head = Layout.Heaps.row(heap) + Layout.Heaps.abandoned + span.sizeClass * 8
        span.next = metadata.load(UInt64.self, at: head)
        metadata.store(address, at: head)
    }

    /// Gives up all of a thread cache's heap lanes; global lock held.
    func abandonHeapLanes(_ cache: UnsafeThreadCache) {
        for (heap, lane) in cache.heapLanes {
            if heapIsLive(heap) { abandon(lane, heap: heap) }
            cache.setHeapLane(heap, nil)
            lane.deallocate()
        }
    }

    /// Rebuilds the abandoned stacks from the spans themselves, after a
    /// holder of the global lock died. Global lock held.
    func rebuildAbandonedStacks() {
        for heap in 0..<Layout.Heaps.capacity {
            for sizeClass in 0..<SizeClass.count {
                metadata.store(UInt64(0), at: Layout.Heaps.row(heap) + Layout.Heaps.abandoned + sizeClass * 8)
            }
        }
        for heap in liveHeaps {
            forEachSpan(of: heap) { shelf, page, entry, span in
                guard entry.tag == .heap(heap), span.sizeClass < SizeClass.count, span.owner == 0 else { return }
                pushAbandoned(shelf.address(ofPage: page).rawValue, span, heap: heap)
            }
        }
    }

    /// A dead process's spans: recounted, then released or abandoned.
    /// Global lock held.
    func adoptOrphanedSpans(ofSlot dead: Int) {
        for heap in liveHeaps {
            forEachSpan(of: heap) { shelf, page, entry, span in
                guard entry.tag == .heap(heap), span.sizeClass < SizeClass.count, span.owner != 0,
                      OpenPool.ownerSlot(span.owner) == dead
                else { return }
                _ = span.recount()
                span.owner = 0
                if span.used == 0 && !span.hasRemoteFree {
                    shelf.releaseRun(at: page, length: entry.length)
                } else {
                    pushAbandoned(shelf.address(ofPage: page).rawValue, span, heap: heap)
                }
            }
        }
    }
}
