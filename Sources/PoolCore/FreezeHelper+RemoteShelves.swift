/// Freezes of remote shelves. Their windows are not write-protected: every
/// write into one goes through its cache (RemoteShelfCache), which asks
/// here first, with its lock held. While the freeze is still protecting,
/// the write waits for the instant, without that lock (the helper takes it
/// to see writes under way end before it answers); once frozen, the pages
/// the freeze needs are read in from the node and saved before the write.
extension FreezeHelper {
    enum RemoteWriteGate {
        case go
        case waitForInstant(UInt32)
        case save(FreezeArea)
    }

    /// What a write into remote shelf `shelf` does first. Its cache's lock
    /// held (taken before this helper's mutex, never after).
    func beforeRemoteWrite(shelf: Int) -> RemoteWriteGate {
        // Nearly always no freeze: one load, not the mutex.
        let word = control.load(ordering: .acquiring)
        let phase = FreezeHelper.phase(word)
        guard phase != .none else { return .go }
        return mutex.withLock {
            guard let area, area.generation == FreezeHelper.generation(word), area.needed[safe: shelf]?.isEmpty == false else {
                return .go
            }
            return phase == .protecting ? .waitForInstant(area.generation) : .save(area)
        }
    }

    /// Saves the memory pages of `bytes` of remote shelf `shelf` that the
    /// freeze needs, from its window (`file`), where the cache has them.
    func saveRemote(_ area: FreezeArea, shelf: Int, file: MappedFile, bytes: Range<Int>) {
        var offset = bytes.lowerBound / FreezeArea.pageBytes * FreezeArea.pageBytes
        while offset < bytes.upperBound {
            area.preserve(shelf: shelf, offset: offset, from: file, tag: pool.slot, isAlive: isAlive)
            offset += FreezeArea.pageBytes
        }
    }
}
