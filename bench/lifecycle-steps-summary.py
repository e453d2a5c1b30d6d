import json,glob,re,statistics,os
import sys
out=sys.argv[1] if len(sys.argv)>1 else '/tmp/rlc-bench/out'
rows={}
for f in sorted(glob.glob(out+'/*.json')):
    if f.endswith('.warm.json'): continue
    name=os.path.basename(f)[:-5]
    try: d=json.load(open(f))
    except Exception as e: continue
    p=d['paths'][0]
    b,mode,r=name.split('-')
    rows.setdefault((mode,b),[]).append((r,p['p50Ms'],p['ok']))
    # agent-side from the log
for (mode,b),v in sorted(rows.items()):
    print(mode,b,'API p50 per session:',[(r,round(x)) for r,x,_ in v],'median of sessions',round(statistics.median([x for _,x,_ in v])))
ag={}
for f in glob.glob(out+'/*-kanga-up.log'):
    if not os.path.exists(f.replace('-kanga-up.log','.json')) or os.path.getsize(f.replace('-kanga-up.log','.json'))==0: continue
    name=os.path.basename(f).replace('-kanga-up.log','')
    b,mode,r=name.split('-')
    for line in open(f):
        if 'msg="instance started"' not in line: continue
        m=re.search(r'agent-total-ms=([\d.]+)',line)
        if not m: continue
        kind='warm-claim' if ' warm=' in line else 'cold'
        ag.setdefault((mode,kind,b),[]).append(float(m.group(1)))
print()
for k,v in sorted(ag.items()):
    print(k,'n=%d'%len(v),'agent-total p50=%.1f ms'%statistics.median(v))
builds=sorted({b for (_,_,b) in ag if b!='before'})
for mode in ['warm','nowarm']:
  for kind in ['warm-claim','cold']:
    for after in builds:
      a=ag.get((mode,kind,after)); b=ag.get((mode,kind,'before'))
      if a and b: print(mode,kind,'ratio %s/before p50 = %.2f'%(after,statistics.median(a)/statistics.median(b)))
for mode in ['warm','nowarm']:
  for after in sorted({b for (_,b) in rows if b!='before'}):
    a=rows.get((mode,after)); b=rows.get((mode,'before'))
    if a and b: print(mode,'API p50 median of sessions %s/before = %.2f'%(after,statistics.median([x for _,x,_ in a])/statistics.median([x for _,x,_ in b])))
