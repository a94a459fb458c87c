"""Decodes a urec --perfetto trace with Perfetto's own protos (pip `perfetto`, with
`protobuf`) and prints what tests/exports.rs checks, as JSON: the tracks, every slice (begin
and end matched per track, as trace_processor nests them) with its parent, args, end args and
call stack, the instant events, and the clock snapshot."""

import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb


def value(a):
    for field in ("string_value", "uint_value", "int_value", "bool_value"):
        if a.HasField(field):
            return getattr(a, field)
    return None


def main(path):
    trace = pb.Trace()
    with open(path, "rb") as f:
        trace.ParseFromString(f.read())
    tracks, names, fnames, frames, stacks = {}, {}, {}, {}, {}
    open_slices, slices, instants, clocks = {}, [], [], []
    for pk in trace.packet:
        if pk.HasField("clock_snapshot"):
            clocks = [[c.clock_id, c.timestamp] for c in pk.clock_snapshot.clocks]
        if pk.HasField("track_descriptor"):
            d = pk.track_descriptor
            if d.HasField("thread"):
                tracks[d.uuid] = {"pid": d.thread.pid, "tid": d.thread.tid,
                                  "name": d.thread.thread_name, "parent": d.parent_uuid}
            elif d.HasField("process"):
                tracks[d.uuid] = {"pid": d.process.pid, "name": d.process.process_name}
            else:
                tracks[d.uuid] = {"name": d.name}
        if pk.HasField("interned_data"):
            i = pk.interned_data
            for e in i.event_names:
                names[e.iid] = e.name
            for e in i.function_names:
                fnames[e.iid] = e.str.decode()
            for e in i.frames:
                frames[e.iid] = e.function_name_id
            for e in i.callstacks:
                stacks[e.iid] = list(e.frame_ids)
        if not pk.HasField("track_event"):
            continue
        e = pk.track_event
        assert pk.timestamp_clock_id == 3, pk
        assert e.track_uuid in tracks, pk
        name = names[e.name_iid] if e.name_iid else e.name
        args = {a.name: value(a) for a in e.debug_annotations}
        stack = [fnames[frames[f]] for f in stacks[e.callstack_iid]] if e.callstack_iid else []
        track = tracks[e.track_uuid]
        where = {"pid": track.get("pid"), "tid": track.get("tid"), "thread": track["name"]}
        st = open_slices.setdefault(e.track_uuid, [])
        if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            s = dict(where, name=name, ts=pk.timestamp, depth=len(st),
                     parent=st[-1]["name"] if st else None, args=args, stack=stack)
            st.append(s)
            slices.append(s)
        elif e.type == pb.TrackEvent.TYPE_SLICE_END:
            s = st.pop()
            assert pk.timestamp >= s["ts"], (s, pk)
            s["end"] = pk.timestamp
            s["end_args"] = args
        elif e.type == pb.TrackEvent.TYPE_INSTANT:
            instants.append(dict(where, name=name, ts=pk.timestamp, args=args, stack=stack))
    unclosed = sum(len(v) for v in open_slices.values())
    json.dump({"tracks": list(tracks.values()), "slices": slices, "instants": instants,
               "clocks": clocks, "unclosed": unclosed}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
