#!/usr/bin/env python3
"""Simulates broadcast rate-limit rules against a steady 10 Hz event stream with occasional late
events: the old slot rule (publication in the slot it lands in, or labelled with the arrival
slot), "one interval since the last broadcast" (bucket of 1) and the token bucket of 2 the
server uses (src/broadcast/budget.rs). Prints p50/p99 latency in ms per rule, phase offset and
seed. Run: python3 tools/broadcast-rate-sim.py (no dependencies; see BENCHMARKS.md)."""
import random
P=100.0; CO=5.0
def arrivals(n, jitter=0.0, spikes=True, seed=1):
    r=random.Random(seed); out=[]; t=0.0
    for i in range(n):
        t+=P + (r.random()*jitter if jitter else 0)
        d=r.expovariate(1/0.5)
        if spikes and r.random()<0.02: d+=r.uniform(10,60)
        out.append(t+d)
    # a late event may arrive after the next one: process in arrival order
    return sorted(out)
def bucket(arr, cap):
    tokens=cap; last=0.0
    # a change is published at max(arrival + CO, when a token is there); later arrivals before
    # that moment ride along (coalesced)
    res=[]
    i=0
    while i < len(arr):
        a=arr[i]
        # refill to time a
        tokens=min(cap, tokens+(a-last)/P); last=a
        if tokens>=1: pub=a+CO
        else: pub=a+max(CO,(1-tokens)*P)
        # include subsequent arrivals before pub
        j=i
        while j+1<len(arr) and arr[j+1]<=pub: j+=1
        # at pub time consume
        tokens=min(cap, tokens+(pub-last)/P); last=pub; tokens-=1
        for k in range(i,j+1): res.append(pub-arr[k])
        i=j+1
    return res
def slots(arr, label_arrival):
    last_slot=-1; res=[]; i=0
    while i<len(arr):
        a=arr[i]; s=int(a//P)
        if s>last_slot: pub=a+CO; lab = s if label_arrival else int(pub//P)
        else: pub=max(a+CO,(s+1)*P); lab=s+1 if label_arrival else int(pub//P)
        j=i
        while j+1<len(arr) and arr[j+1]<=pub: j+=1
        for k in range(i,j+1): res.append(pub-arr[k])
        last_slot=lab; i=j+1
    return res
def pct(xs,p): xs=sorted(xs); return xs[min(len(xs)-1,int(p*len(xs)))]
if __name__ == "__main__":
    for off in [0, 50, 94, 99.5]:
        for seed in [1, 2]:
            arr = [a + off for a in arrivals(3000, jitter=0, seed=seed)]
            row = []
            for lab, f in [("slot", lambda a: slots(a, False)), ("slot-arrival", lambda a: slots(a, True)),
                           ("cap1", lambda a: bucket(a, 1)), ("cap2", lambda a: bucket(a, 2))]:
                r = f(arr)
                row.append(f"{lab}: {pct(r, .5):.0f}/{pct(r, .99):.0f}")
            print("offset", off, "seed", seed, " | ".join(row))
