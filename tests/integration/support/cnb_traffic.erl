%% cnb_traffic: the order-and-replies harness that inline_tests and
%% spin_tests run on a peer node against a `cnode --demo`: while their
%% senders (already spawned, linked, each telling {sent, Pid} when done) send
%% numbered messages {m, K, I} to probes subscribed to us, Callers processes
%% call {echo, CN} Calls times each (each call within Timeout ms); every reply must be its request, and
%% each sender's numbers must come back from the probes in order.
-module(cnb_traffic).

-export([check/5, caller/4]).

%% ok, or what went wrong. Senders: the sender pids (K = 1..length);
%% Unwrap(Info) takes {m, K, I} out of a probe's {probe_info, _, Info}.
-spec check(node(), [pid()], pos_integer(), {pos_integer(), pos_integer(), timeout()},
            fun((term()) -> term())) -> ok | term().
check(CN, Senders, Msgs, {Callers, Calls, Timeout}, Unwrap) ->
    Self = self(),
    Cs = [spawn_link(?MODULE, caller, [Self, {echo, CN}, K, {Calls, Timeout}]) || K <- lists:seq(1, Callers)],
    CallsOk = [receive {called, P, R} -> R after 120000 -> {caller_timeout, P} end || P <- Cs],
    SendsOk = [receive {sent, P} -> ok after 120000 -> {sender_timeout, P} end || P <- Senders],
    N = length(Senders),
    Got = collect(maps:from_list([{K, 0} || K <- lists:seq(1, N)]), N * Msgs, Unwrap),
    case {[X || X <- CallsOk ++ SendsOk, X =/= ok], Got} of
        {[], ok} -> ok;
        Bad -> Bad
    end.

%% Calls Dest with {K, I} for I in 1..Calls, each within Timeout; tells Parent {called, self(), ok}
%% or the first wrong reply.
-spec caller(pid(), term(), pos_integer(), {pos_integer(), timeout()}) -> {called, pid(), term()}.
caller(Parent, Dest, K, {Calls, Timeout}) ->
    R = lists:foldl(fun(I, ok) ->
                            case gen_server:call(Dest, {K, I}, Timeout) of
                                {K, I} -> ok;
                                Other -> {wrong_reply, {K, I}, Other}
                            end;
                       (_, Err) -> Err
                    end, ok, lists:seq(1, Calls)),
    Parent ! {called, self(), R}.

%% Each sender's next number, until Left messages came; then ok.
collect(_Next, 0, _Unwrap) -> ok;
collect(Next, Left, Unwrap) ->
    receive
        {probe_info, _, Info} ->
            {m, K, I} = Unwrap(Info),
            case maps:get(K, Next) of
                Prev when I =:= Prev + 1 -> collect(Next#{K := I}, Left - 1, Unwrap);
                Prev -> {out_of_order, K, {after_, Prev}, {got, I}}
            end
    after 60000 ->
            {missing, Left, Next}
    end.
