"""The report's per-query view: which queries one system helped or hurt against another, and
what it moved.

For a pair of systems of an experiment (``--compare A B``; default: the baseline against the
best other system by the first measure), the page gets a sorted bar chart of the per-query
metric differences (static HTML, each bar a link) and, on click, that query's side-by-side
view: both top-k lists with grades, the rank each passage has in the other list and its move,
query terms highlighted, every stage's score, the LLM calls and tokens each stage spent on the
query, and for RAG runs the question, gold answers, answer, citations and the context with the
kept sentences marked. Details are rendered by a small script from JSON embedded in the page,
only when a query is opened (the page opens fast however many queries it holds) and never
fetch anything.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError


@dataclass
class Comparison:
    """What the page needs for one experiment's pair of systems."""

    a: str
    b: str
    measure: str | None
    data: dict[str, Any]


def pick_pair(results: dict[str, Any], compare: tuple[str, str] | None) -> tuple[str, str] | None:
    """The two systems to compare: ``compare`` if given, else the baseline (or the first system)
    against the best other one by the first measure (or the second system without measures)."""
    names = [str(s["name"]) for s in results["systems"]]
    if compare is not None:
        missing = [n for n in compare if n not in names]
        if missing:
            raise ConfigError(f"--compare names {missing}, not systems of this experiment ({', '.join(names)})")
        return compare
    if len(names) < 2:
        return None
    base = results.get("baseline") or names[0]
    measures = [str(m) for m in results.get("measures") or []]
    others = [s for s in results["systems"] if s["name"] != base]
    if measures:
        m = measures[0]
        others.sort(key=lambda s: -float((s.get("means") or {}).get(m, float("-inf"))))
    return base, str(others[0]["name"])


def comparison(results: dict[str, Any], found: dict[str, Any], pair: tuple[str, str]) -> Comparison:
    """The embedded data for ``pair`` from ``results.json`` and ``details.json`` contents."""
    a, b = pair
    by_name = {s["name"]: s for s in results["systems"]}
    measures = [str(m) for m in results.get("measures") or []]
    measure = next((m for m in measures if m in (by_name[a].get("per_query") or {})), None)
    qids = list(found["queries"])
    diffs = []
    if measure is not None:
        va, vb = by_name[a]["per_query"][measure], by_name[b]["per_query"][measure]
        diffs = [[q, va[q], vb[q]] for q in qids if _finite(va.get(q)) and _finite(vb.get(q))]
        diffs.sort(key=lambda d: (-(d[2] - d[1]), d[0]))
    systems = {n: found["systems"].get(n, {}) for n in pair}
    used = {
        e["docid"]
        for per_query in systems.values()
        for entry in per_query.values()
        for e in [*entry.get("ranking", []), *(entry.get("answer") or {}).get("context", [])]
    }
    usage = {n: {stage: u.get("per_query", {}) for stage, u in (by_name[n].get("usage") or {}).items()} for n in pair}
    data = {
        "a": a,
        "b": b,
        "measure": measure,
        "diffs": diffs,
        "qids": qids,
        "queries": found["queries"],
        "documents": {d: t for d, t in found["documents"].items() if d in used},
        "systems": systems,
        "usage": usage,
    }
    return Comparison(a, b, measure, data)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _href(index: int, qid: str) -> str:
    return html.escape(f"#e{index}:q={quote(qid, safe='')}")


def bars_html(index: int, c: Comparison) -> str:
    """The sorted per-query differences as linked bars (or a plain list of queries)."""
    e = html.escape
    head = f"<h3 id='e{index}'>Per query: {e(c.b)} against {e(c.a)}</h3>"
    if not c.data["diffs"]:
        links = "".join(f"<a class='ql' href='{_href(index, q)}'>{e(q)}</a> " for q in c.data["qids"])
        why = "no per-query measure (no judgments)" if c.measure is None else "no query scored by both systems"
        return (
            f"{head}<p class='env'>{why}; open a query:</p><p>{links}</p><div class='detail' id='detail-{index}'></div>"
        )
    diffs = c.data["diffs"]
    top = max(abs(vb - va) for _, va, vb in diffs) or 1.0
    wins = sum(vb > va for _, va, vb in diffs)
    losses = sum(vb < va for _, va, vb in diffs)
    rows = []
    for qid, va, vb in diffs:
        d = vb - va
        width = 50 * abs(d) / top
        side = f"left:50%;width:{width:.2f}%" if d >= 0 else f"left:{50 - width:.2f}%;width:{width:.2f}%"
        kind = "pos" if d > 0 else "neg" if d < 0 else "tie"
        text = e(c.data["queries"].get(qid, {}).get("text", ""))
        rows.append(
            f"<a class='bar' href='{_href(index, qid)}' title='{e(qid)}: {va:.4g} → {vb:.4g}'>"
            f"<span class='qid'>{e(qid)}</span><span class='track'><span class='fill {kind}' style='{side}'></span>"
            f"</span><span class='v'>{d:+.3f}</span><span class='qt'>{text}</span></a>"
        )
    summary = (
        f"<p class='env'>{e(c.measure or '')} of {e(c.b)} minus {e(c.a)} per query, best first: "
        f"{wins} better, {losses} worse, {len(diffs) - wins - losses} equal. Click a query for its rankings.</p>"
    )
    return f"{head}{summary}<div class='bars'>{''.join(rows)}</div><div class='detail' id='detail-{index}'></div>"


def data_script(index: int, c: Comparison) -> str:
    """The comparison's data as an inert JSON script element (``</`` escaped)."""
    text = json.dumps(c.data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return f"<script type='application/json' id='rf-data-{index}'>{text}</script>"


STYLE = (
    ".bars{font-size:12px;margin:.5em 0 1em}.bar{display:flex;align-items:center;gap:6px;color:inherit;"
    "text-decoration:none;padding:1px 0}.bar:hover{background:#f5f5ff}.qid{width:90px;overflow:hidden}"
    ".track{position:relative;width:260px;height:10px;background:#f2f2f2}.fill{position:absolute;top:0;"
    "height:10px}.fill.pos{background:#2a9d3a}.fill.neg{background:#c8372d}.v{width:55px;text-align:right;"
    "font-variant-numeric:tabular-nums}.qt{color:#555;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;"
    "max-width:520px}.detail{border-top:2px solid #ddd;margin-top:1em}.sbs{display:flex;gap:12px}"
    ".col{flex:1;min-width:0}.item{border-bottom:1px solid #eee;padding:4px 0;font-size:13px}.rank{font-weight:600;"
    "margin-right:4px}.grade{display:inline-block;min-width:1.4em;text-align:center;border-radius:3px;"
    "background:#ddd;margin-right:4px}.g1{background:#e3f1d4}.g2{background:#b8dd98}.g3{background:#7cc35a}"
    ".move{font-size:11px;margin-left:6px}.up{color:#2a9d3a}.down{color:#c8372d}.new{color:#8a5cc2}"
    ".hist{color:#666;font-size:11px}.text{margin:2px 0}mark{background:#fff2a8}mark.kept{background:#cdeccd}"
    ".dropped{color:#999}.usage{font-size:12px;color:#444}.ql{margin-right:6px}"
)

SCRIPT = r"""
(function(){
const esc=s=>String(s==null?'':s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const STOP=new Set('the and for are was what how why who when where which with from that this does did into its of a an to in on is be by or as at it do'.split(' '));
function terms(q){return [...new Set(q.toLowerCase().match(/[\p{L}\p{N}]+/gu)||[])].filter(t=>t.length>2&&!STOP.has(t));}
function highlight(text,ts){
  if(!ts.length)return esc(text);
  const re=new RegExp('('+ts.map(t=>t.replace(/[.*+?^${}()|[\]\\]/g,'\\$&')).join('|')+')','giu');
  return String(text).split(re).map((p,i)=>i%2?'<mark>'+esc(p)+'</mark>':esc(p)).join('');
}
function fmt(x){return typeof x==='number'?(Math.abs(x)>=1000?x.toFixed(0):x.toPrecision(4)):esc(x);}
function rankOf(entry){const m=new Map();(entry.order||entry.ranking.map(c=>c.docid)).forEach((d,i)=>m.set(d,i+1));return m;}
function column(D,name,other,qid,ts,judged){
  // The move is always A -> B: in B's list how far B moved a passage against A (new: not in A's list);
  // in A's list where B put it (gone: not in B's list).
  const e=D.systems[name][qid],isB=name===D.b,otherName=isB?D.a:D.b;
  if(!e)return '<div class="col"><h4>'+esc(name)+'</h4><p>no ranking for this query</p></div>';
  const theirs=other?rankOf(other):new Map();
  let h='<div class="col"><h4>'+esc(name)+'</h4>';
  e.ranking.forEach((c,i)=>{
    const doc=D.documents[c.docid]||{},g=D.queries[qid].grades[c.docid];
    const grade=g!=null?'<span class="grade g'+Math.min(g,3)+'" title="judged grade">'+g+'</span>':'<span class="grade" title="'+(judged?'not judged':'no judgments')+'">?</span>';
    const r=theirs.get(c.docid);let mv='';
    if(other&&r==null)mv=isB?'<span class="move new" title="not in '+esc(otherName)+'\'s list">new</span>':'<span class="move down" title="not in '+esc(otherName)+'\'s list">gone from '+esc(otherName)+'</span>';
    else if(other){const d=isB?r-(i+1):(i+1)-r,arrow=d>0?'↑'+d:d<0?'↓'+(-d):'=';
      mv='<span class="move '+(d>0?'up':d<0?'down':'')+'" title="rank in '+esc(otherName)+': '+r+'">'+arrow+' ('+esc(otherName)+': '+r+')</span>';}
    const hist=Object.entries(c.scores).map(([s,v])=>esc(s)+' '+fmt(v)).join(' → ');
    h+='<div class="item" data-docid="'+esc(c.docid)+'"><span class="rank">'+(i+1)+'</span>'+grade+'<b>'+esc(c.docid)+'</b>'+mv+
      (doc.title?'<div><i>'+highlight(doc.title,ts)+'</i></div>':'')+'<div class="text">'+highlight(doc.text||'',ts)+(doc.cut?' …':'')+'</div><div class="hist">'+hist+'</div></div>';
  });
  return h+'</div>';
}
function usage(D,name,qid){
  const rows=Object.entries(D.usage[name]||{}).filter(([s,pq])=>pq[qid]).map(([s,pq])=>{const u=pq[qid];
    return esc(s)+': '+u.calls+' calls, '+u.prompt_tokens+' prompt + '+u.output_tokens+' output tokens, '+fmt(u.latency_s)+' s';});
  return rows.length?'<div class="usage"><b>'+esc(name)+'</b> LLM use on this query: '+rows.join('; ')+'</div>':'';
}
function answer(D,name,qid,ts,n){
  const e=D.systems[name][qid];if(!e||!e.answer)return '';
  const a=e.answer,id='e'+n+'-'+name;
  let text=esc(a.text).replace(/\[(\d+)\]/g,(m,k)=>'<a href="#'+id+'-c'+k+'" onclick="document.getElementById(\''+id+'-c'+k+'\').scrollIntoView();return false">['+k+']</a>');
  let h='<div class="col"><h4>'+esc(name)+': answer</h4><p class="answer">'+text+'</p>';
  h+='<p class="usage">citations: '+(a.citations.map(([k,d])=>'['+k+'] → '+(d==null?'<i>no such passage</i>':esc(d))).join(', ')||'none')+'</p>';
  a.context.forEach((c,i)=>{
    const doc=D.documents[c.docid]||{};let body;
    if(c.spans&&doc.text&&!doc.compressed_only){let at=0;body='';
      c.spans.forEach(([s,t])=>{body+='<span class="dropped">'+esc(doc.text.slice(at,s))+'</span><mark class="kept">'+esc(doc.text.slice(s,t))+'</mark>';at=t;});
      body+='<span class="dropped">'+esc(doc.text.slice(at))+'</span>';}
    else body=highlight(c.text,ts);
    h+='<div class="item" id="'+id+'-c'+(i+1)+'"><span class="rank">['+(i+1)+']</span><b>'+esc(c.docid)+'</b>'+(c.spans?' <span class="hist">kept sentences marked</span>':'')+'<div class="text">'+body+'</div></div>';
  });
  return h+'</div>';
}
const parsed={};
function show(){
  const m=location.hash.match(/^#e(\d+):q=(.*)$/);if(!m)return;
  let qid;try{qid=decodeURIComponent(m[2]);}catch(err){qid=m[2];}
  const n=m[1],box=document.getElementById('detail-'+n),src=document.getElementById('rf-data-'+n);
  if(!box||!src)return;
  const D=parsed[n]||(parsed[n]=JSON.parse(src.textContent)),q=D.queries[qid];  // parsed once, when first needed
  if(!q){box.innerHTML='<p>unknown query '+esc(qid)+'</p>';return;}
  const ts=terms(q.text),ea=D.systems[D.a][qid],eb=D.systems[D.b][qid];
  let h='<h3 class="qhead">Query '+esc(qid)+': '+highlight(q.text,ts)+'</h3>';
  const d=D.diffs.find(x=>x[0]===qid);
  if(d)h+='<p>'+esc(D.measure)+': '+esc(D.a)+' '+fmt(d[1])+' → '+esc(D.b)+' '+fmt(d[2])+' ('+(d[2]-d[1]>=0?'+':'')+(d[2]-d[1]).toFixed(3)+')</p>';
  if(!q.judged)h+='<p class="usage">no judgments for this query: grades unknown (?)</p>';
  if(q.gold&&q.gold.length)h+='<p>gold answers: '+q.gold.map(esc).join(' | ')+'</p>';
  h+=usage(D,D.a,qid)+usage(D,D.b,qid);
  const rag=answer(D,D.a,qid,ts,n)+answer(D,D.b,qid,ts,n);
  if(rag)h+='<div class="sbs">'+rag+'</div>';
  h+='<div class="sbs">'+column(D,D.a,eb,qid,ts,q.judged)+column(D,D.b,ea,qid,ts,q.judged)+'</div>';
  box.innerHTML=h;box.scrollIntoView();
}
window.addEventListener('hashchange',show);window.addEventListener('DOMContentLoaded',show);
})();
"""
