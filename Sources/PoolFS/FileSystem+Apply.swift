import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// The one place the model changes: each log record, applied live (after
/// it was checked and logged) or on replay (where a record may name an
/// inode that an earlier crash already dropped: it is skipped).
extension FileSystem {
    /// Applies `change`; returns the runs it released, with their heaps.
    func apply(_ change: Change, replaying: Bool) -> [Release] {
        var released: [Release] = []
        switch change {
        case .inode(let record):
            inodes[record.number] = Inode(record)
            if FileSystem.isFrozen(record.number) {
                nextFrozen = max(nextFrozen, record.number + 1)
            } else {
                nextInode = max(nextInode, record.number + 1)
            }

        case let .entry(parent, name, number):
            inodes[parent]?.directory?.add(name, number)
            noteNames(added: name)

        case let .create(parent, name, record):
            guard let directory = inodes[parent], directory.directory != nil else { break }
            let inode = Inode(record)
            inodes[record.number] = inode
            nextInode = max(nextInode, record.number + 1)
            directory.directory!.add(name, record.number)
            noteNames(added: name)
            if inode.isDirectory { directory.record.nlink += 1 }
            touch(directory, record.ctime)

        case let .link(parent, name, number, time):
            guard let directory = inodes[parent], let inode = inodes[number] else { break }
            directory.directory?.add(name, number)
            noteNames(added: name)
            inode.record.nlink += 1
            inode.record.ctime = time
            touch(directory, time)

        case let .unlink(parent, name, time):
            guard let directory = inodes[parent], let number = directory.directory?.remove(name) else { break }
            noteNames(removed: name)
            touch(directory, time)
            released += unlinked(number, from: directory, time: time, replaying: replaying)

        case let .rename(from, name, to, newName, exchange, time, whiteout):
            guard let source = inodes[from], let target = inodes[to],
                  let moving = source.directory?.inode(named: name) else { break }
            if exchange {
                guard let other = target.directory?.inode(named: newName) else { break }
                source.directory!.replace(name, other)
                target.directory!.replace(newName, moving)
                if from != to {
                    reparent(moving, from: source, to: target)
                    reparent(other, from: target, to: source)
                }
                inodes[other]?.record.ctime = time
            } else {
                source.directory!.remove(name)
                noteNames(removed: name)
                if let replaced = target.directory?.remove(newName) {
                    noteNames(removed: newName)
                    released += unlinked(replaced, from: target, time: time, replaying: replaying)
                }
                target.directory!.add(newName, moving)
                noteNames(added: newName)
                if from != to { reparent(moving, from: source, to: target) }
            }
            inodes[moving]?.record.ctime = time
            touch(source, time)
            touch(target, time)
            if let whiteout, !exchange {
                inodes[whiteout.number] = Inode(whiteout)
                nextInode = max(nextInode, whiteout.number + 1)
                source.directory!.add(name, whiteout.number)
                noteNames(added: name)
            }

        case let .setAttributes(number, c):
            guard let inode = inodes[number] else { break }
            if let mode = c.mode { inode.record.mode = inode.record.mode & S_IFMT | mode & 0o7777 }
            if let uid = c.uid { inode.record.uid = uid }
            if let gid = c.gid { inode.record.gid = gid }
            if let size = c.size {
                // Runs past the new size go, whatever the size was: replay
                // and the live change cut the same runs.
                let kept = (size + pageSize - 1) >> pageShift
                released += inode.extents.removeAll(from: kept).map { Release(extent: $0) }
                if let cut = inode.extents.cut(at: kept) {
                    released.append(Release(extent: cut, kept: [0..<Int(kept - cut.page)]))
                }
                inode.record.size = size
            }
            if let atime = c.atime { inode.record.atime = atime }
            if let mtime = c.mtime { inode.record.mtime = mtime }
            inode.record.ctime = c.ctime

        case let .written(number, size, time):
            guard let inode = inodes[number] else { break }
            inode.record.size = size
            inode.record.mtime = time
            inode.record.ctime = time

        case let .extent(number, extent):
            guard let inode = inodes[number] else { break }
            // A file that outgrew its fragment, or shrank into one: its
            // bytes moved to this extent.
            if extent.page == 0, let first = inode.extents.extents.first, first.page == 0,
               first.isFragment || extent.isFragment {
                inode.extents.remove(first)
                released.append(Release(extent: first))
            } else if !extent.isFragment {
                // A page copied from shared pages (or a clone's pages)
                // takes the place of what the file had there.
                released += inode.extents.punch(extent.page..<extent.end, pageShift: pageShift).map {
                    Release(extent: $0.extent, kept: $0.kept)
                }
            }
            inode.extents.insert(extent)

        case let .punch(number, from, to, time):
            guard let inode = inodes[number] else { break }
            released += inode.extents.punch(from..<to, pageShift: pageShift).map {
                Release(extent: $0.extent, kept: $0.kept)
            }
            inode.record.mtime = time
            inode.record.ctime = time

        case let .setXattr(number, name, value, time):
            if inodes[number].map({ $0.xattrs[name] == nil }) == true { noteNames(added: name) }
            inodes[number]?.xattrs[name] = value
            inodes[number]?.record.ctime = time

        case let .removeXattr(number, name, time):
            if inodes[number]?.xattrs.removeValue(forKey: name) != nil { noteNames(removed: name) }
            inodes[number]?.record.ctime = time

        case let .ahead(number, taken):
            inodes[number]?.aheadOfSize = taken

        case let .setHeap(number, heap, time):
            inodes[number]?.record.heap = heap
            inodes[number]?.record.ctime = time

        case let .snapshot(name, first):
            copySnapshot(name, first: first)

        case let .dropSnapshot(name):
            released += dropSnapshot(name)

        case let .drop(number):
            if let inode = inodes.removeValue(forKey: number) {
                for name in inode.xattrs.keys { noteNames(removed: name) }
                released += inode.extents.extents.map { Release(extent: $0) }
            }
        }
        return released
    }

    /// The log's reserve follows the names and xattrs there are to remove.
    private func noteNames(added name: FileName) { log.noteRemovals(MetadataLog.removalCost(name)) }
    private func noteNames(removed name: FileName) { log.noteRemovals(-MetadataLog.removalCost(name)) }

    private func touch(_ directory: Inode, _ time: Timestamp) {
        directory.record.mtime = time
        directory.record.ctime = time
    }

    /// A name of `number` is gone: counts drop, and an inode with no names
    /// and no opens is dropped (on replay nothing is open).
    private func unlinked(_ number: UInt64, from directory: Inode, time: Timestamp, replaying: Bool) -> [Release] {
        guard let inode = inodes[number] else { return [] }
        inode.record.ctime = time
        if inode.isDirectory {
            inode.record.nlink = 0
            directory.record.nlink = max(directory.record.nlink, 1) - 1   // a damaged count never traps
        } else if inode.record.nlink > 0 {
            inode.record.nlink -= 1
        }
        guard inode.record.nlink == 0, inode.opens == 0 || replaying else { return [] }
        inodes.removeValue(forKey: number)
        for name in inode.xattrs.keys { noteNames(removed: name) }
        return inode.extents.extents.map { Release(extent: $0) }
    }

    private func reparent(_ number: UInt64, from source: Inode, to target: Inode) {
        guard let inode = inodes[number], inode.isDirectory else { return }
        inode.record.parent = target.number
        source.record.nlink = max(source.record.nlink, 1) - 1
        target.record.nlink += 1
    }
}
