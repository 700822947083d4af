// The report's per-query view: side-by-side rankings of two systems, opened from the bars.
(function(){
const esc=s=>String(s==null?'':s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const STOP=new Set('the and for are was what how why who when where which with from that this does did into its of a an to in on is be by or as at it do'.split(' '));
function terms(q){return [...new Set(q.toLowerCase().match(/[\p{L}\p{N}]+/gu)||[])].filter(t=>t.length>2&&!STOP.has(t));}
function highlight(text,ts){
  if(!ts.length)return esc(text);
  // whole words only: a term is not marked inside a longer word ("run" in "pruning")
  const re=new RegExp('(?<![\\p{L}\\p{N}])('+ts.map(t=>t.replace(/[.*+?^${}()|[\]\\]/g,'\\$&')).join('|')+')(?![\\p{L}\\p{N}])','giu');
  return String(text).split(re).map((p,i)=>i%2?'<mark>'+esc(p)+'</mark>':esc(p)).join('');
}
// numbers as in the tables: thousands separated above 1,000, else three decimals
function fmt(x){return typeof x==='number'?(Math.abs(x)>=1000?Math.round(x).toLocaleString('en-US'):x.toFixed(3)):esc(x);}
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
